"""Data-parallel training: two CPU processes (gloo, localhost) splitting a meta-batch give the weights of one
process training on the whole meta-batch."""

import os
import socket

import torch
import torch.multiprocessing as mp

from .conftest import TINY, assert_same_state, ghn_state, make_ghn

STEPS, META = 2, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_training(run_dir: str) -> None:
    """Train the tiny GHN for STEPS steps of META nets (used by both the single and the 2-process run)."""
    from archspace.dataset import ArchDataset
    from train.data import TrainBatches, load_digits
    from train.loop import Trainer

    torch.set_num_threads(1)
    archs = ArchDataset(split="train", num=500, width_range=(TINY["width"], TINY["width"]))
    images = TrainBatches(load_digits(), TINY["batch_size"], seed=0)
    # SGD: the update is linear in the gradient, so the comparison is sharp (Adam would amplify rounding
    # differences of near-zero gradients). NCHW: BatchNorm's channels-last kernels round 10-60x more coarsely,
    # which would blur the comparison to ~1e-4 (the memory format is checked in test_loop).
    trainer = Trainer(make_ghn(0), archs, images, run_dir, steps=STEPS, meta_batch_size=META, max_nodes=0,
                      max_net_nodes=TINY["max_net_nodes"], optimizer="sgd", lr=0.05, ckpt_every=1,
                      progress=False, device="cpu", seed=0, channels_last=False)
    trainer.fit()


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    if rank > 0:  # only rank 0 writes checkpoints: a write from another rank fails this process (and the test)
        import train.loop

        def refuse(*args, **kwargs):
            raise AssertionError(f"rank {rank} wrote a checkpoint")

        train.loop.save_checkpoint = refuse
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run_training(run_dir)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    from ghn import GHN

    single = str(tmp_path / "single")
    run_training(single)
    ddp = str(tmp_path / "ddp")
    mp.start_processes(_worker, args=(2, free_port(), ddp), nprocs=2, join=True, start_method="spawn")
    a = ghn_state(GHN.load(os.path.join(single, "ghn.safetensors")))
    b = ghn_state(GHN.load(os.path.join(ddp, "ghn.safetensors")))
    assert_same_state(a, b, atol=1e-6)
    # The weights moved, so the comparison is not trivially true; rank 0 wrote the checkpoints (_worker).
    assert any(not torch.equal(a[k], v) for k, v in ghn_state(make_ghn(0)).items())
    assert sorted(os.listdir(os.path.join(ddp, "checkpoints"))) == ["LATEST", "step_00000001", "step_00000002"]
