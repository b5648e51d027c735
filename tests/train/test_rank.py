"""Tests for :mod:`train.candidates`, :mod:`train.rank` and ``ghn rank`` (:mod:`train.rank_cli`) at debug size."""

import csv
import json

import numpy as np
import pytest
import torch

from archspace.sampler import get_genotype, get_net
from train.candidates import CandidateError, parse_candidates
from train.correlation import rank_correlation
from train.data import eval_batches, load_digits
from train.rank import (
    RankRow,
    fit_embedding_regressor,
    format_table,
    rank_rows,
    read_labels,
    score_candidates,
    write_csv,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two threads can make small nets many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# ---- candidate lists ------------------------------------------------------------------------------------------


def test_deepnets_ranges_and_bare_tokens_continue_the_split():
    names = [c.name for c in parse_candidates(["deepnets:test/0-2,5", "deepnets:val/7"])]
    assert names == ["deepnets:test/0", "deepnets:test/1", "deepnets:test/2", "deepnets:test/5", "deepnets:val/7"]
    assert len(parse_candidates(["deepnets:bnfree"])) == 100


def test_torchvision_list_and_duplicates_dropped():
    cands = parse_candidates(["torchvision:resnet18,vgg11_bn", "torchvision:resnet18"])
    assert [c.spec for c in cands] == ["torchvision:resnet18", "torchvision:vgg11_bn"]


def test_genotype_file_builds_the_same_nets(tmp_path):
    path = tmp_path / "g.jsonl"
    lines = [json.dumps(get_genotype("test", 3).to_dict()),
             "# a comment", "",
             json.dumps({"name": "mine", "genotype": get_genotype("test", 4).to_dict()}),
             "deepnets:val/1"]
    path.write_text("\n".join(lines) + "\n")
    cands = parse_candidates([str(path)])
    assert [c.name for c in cands] == ["g.jsonl:1", "mine", "deepnets:val/1"]
    for cand, ref in zip(cands, [get_net("test", 3), get_net("test", 4)]):
        assert sum(p.numel() for p in cand.build().parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("args, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    ([], "empty"),
    ([" , "], "empty"),
    (["deepnets:nosuch/0"], "unknown DeepNets-1M split"),
    (["deepnets:test/499-500"], "out of range"),
    (["deepnets:test/5-2"], "LOW <= HIGH"),
    (["deepnets:test/x"], "bad index"),
    (["deepnets:train"], "give a range"),
    (["resnet18"], "cannot tell what"),
    (["no/such/file.jsonl"], "cannot tell what"),
    (["file:no/such/file.jsonl"], "does not exist"),
])
def test_bad_candidate_lists_are_explained(args, message):
    with pytest.raises(CandidateError, match=message):
        parse_candidates(args)


def test_bad_genotype_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"normal": [["conv_3x3", 0]], "colour": 1}\n')
    with pytest.raises(CandidateError, match="bad.jsonl:1: not a valid genotype"):
        parse_candidates([str(path)])


# ---- scoring and ranking --------------------------------------------------------------------------------------


def test_score_and_rank_with_a_stub_predictor(digits, tmp_path):
    cands = parse_candidates(["deepnets:test/0-2"], width=8)
    batches = eval_batches(digits, "heldout", limit=128)
    calls = []

    def predict(model):  # stands in for a GHN: records the call, zeroes the classifier of the second net
        calls.append(model)
        if len(calls) == 2:
            [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].weight.zero_()
        return model

    def broken(model):
        raise RuntimeError("cannot predict\nsecond line")

    rows = score_candidates(cands, predict, batches, num_classes=10, image_size=32)
    assert len(calls) == 3 and all(r.error is None for r in rows)
    assert all(0 <= r.accuracy <= 100 and r.loss > 0 and r.params > 0 for r in rows)
    assert rows[1].loss == pytest.approx(np.log(10), abs=0.05)  # zero classifier weight: near-uniform logits
    # the same seed gives the same default initialisation, hence the same score
    assert rows[0].params == sum(p.numel() for p in get_net("test", 0, width=8).parameters())
    again = score_candidates(cands[:1], lambda m: m, batches, num_classes=10, image_size=32)
    assert again[0].accuracy == rows[0].accuracy and again[0].loss == pytest.approx(rows[0].loss)

    rows += score_candidates(parse_candidates(["deepnets:test/3"], width=8), broken, batches, num_classes=10,
                             image_size=32)
    assert rows[-1].error == "RuntimeError: cannot predict"
    ranked = rank_rows(rows)
    assert [r.rank for r in ranked] == [1, 2, 3, None]
    accs = [r.accuracy for r in ranked[:3]]
    assert accs == sorted(accs, reverse=True)

    out = tmp_path / "r.csv"
    write_csv(ranked, str(out))
    table = list(csv.DictReader(out.open()))
    assert [t["name"] for t in table] == [r.name for r in ranked]
    assert table[-1]["error"].startswith("RuntimeError") and table[0]["rank"] == "1"
    text = format_table(ranked, top=2)
    assert "1 more" in text and "deepnets:test/3" in text


def test_rank_by_loss_and_trained_rank():
    rows = [RankRow("a", accuracy=50, loss=1.0, trained_accuracy=70, trained_loss=0.5),
            RankRow("b", accuracy=50, loss=0.5, trained_accuracy=80, trained_loss=0.4),
            RankRow("c", accuracy=60, loss=2.0, trained_accuracy=60, trained_loss=0.9)]
    assert [r.name for r in rank_rows(rows)] == ["c", "b", "a"]  # ties on accuracy broken by loss
    assert [r.name for r in rank_rows(rows, by="loss")] == ["b", "a", "c"]
    assert {r.name: r.trained_rank for r in rows} == {"b": 1, "a": 2, "c": 3}
    with pytest.raises(ValueError, match="embed"):
        rank_rows(rows, by="embed")


def test_embedding_regressor_fits_a_linear_property(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    y = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 3
    reg = fit_embedding_regressor(x, y, alpha=1e-3)
    np.testing.assert_allclose(reg.predict(x), y, atol=0.05)
    labels = tmp_path / "l.csv"
    labels.write_text("name,accuracy\ndeepnets:train/1,55.5\ndeepnets:train/2,60\n")
    assert read_labels(str(labels)) == {"deepnets:train/1": 55.5, "deepnets:train/2": 60.0}
    labels.write_text("name,accuracy\ndeepnets:train/1,high\n")
    with pytest.raises(ValueError, match="not a number"):
        read_labels(str(labels))


# ---- ghn rank end to end --------------------------------------------------------------------------------------


#: Debug size: DeepNets-1M nets of width 8 on 16x16 digits.
SMALL = ["--width", "8", "--image-size", "16"]


def save_tiny_ghn(path, num_classes: int = 10) -> str:
    """An untrained debug-size GHN saved with ``GHN.save``."""
    from ghn import GHN

    torch.manual_seed(0)
    GHN(max_shape=(16, 16, 3, 3), num_classes=num_classes, hidden_dim=8).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def ghn_ckpt(tmp_path_factory):
    return save_tiny_ghn(tmp_path_factory.mktemp("ghn") / "ghn.safetensors")


def test_rank_cli_scores_validates_and_writes(ghn_ckpt, tmp_path, capsys):
    from ghn import GHN
    from train.finetune import evaluate
    from train.rank_cli import main

    out, png = tmp_path / "ranking.csv", tmp_path / "rank.png"
    rc = main(["deepnets:test/0-3", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "128", "--validate", "3",
               "--train-batch-size", "32", "--plot", str(png), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["name"] for r in rows) == [f"deepnets:test/{i}" for i in range(4)]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert sorted(int(r["trained_rank"]) for r in rows) == [1, 2, 3, 4]
    accs = [float(r["accuracy"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    summary = json.loads((tmp_path / "ranking.summary.json").read_text())
    expected = rank_correlation(accs, [float(r["trained_accuracy"]) for r in rows]).as_dict()
    assert summary["validation"]["kendall_tau"] == pytest.approx(expected["kendall_tau"])
    assert summary["validation"]["spearman_rho"] == pytest.approx(expected["spearman_rho"])
    assert "Kendall tau" in printed and "Spearman rho" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the CSV accuracy is the accuracy of the predicted parameters, BN with batch statistics, batches of 64
    torch.manual_seed(0)
    model = GHN.load(ghn_ckpt).predict(get_net("test", 2, image_size=16, width=8), input_size=16)
    acc, _ = evaluate(model, eval_batches(load_digits(image_size=16), "heldout", limit=128), bn_batch_stats=True)
    assert float(next(r for r in rows if r["name"] == "deepnets:test/2")["accuracy"]) == pytest.approx(acc, abs=1e-3)


def test_rank_cli_embedding_regressor(ghn_ckpt, tmp_path, capsys):
    from train.rank_cli import main

    labels = tmp_path / "labels.csv"
    labels.write_text("name,accuracy\n" + "".join(f"deepnets:train/{i},{10 * i}\n" for i in range(5)))
    out = tmp_path / "r.csv"
    rc = main(["deepnets:test/0-2", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "64", "--embed-regressor", str(labels),
               "--rank-by", "embed", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    scores = [float(r["embed_score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("argv, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    ([","], "candidate list is empty"),
    (["deepnets:test/0", "--validate", "-1"], "--validate must be"),
    (["deepnets:test/0", "--plot", "x.png"], "add --validate"),
    (["deepnets:test/0", "--data", "cifar10"], "needs a root folder"),
    (["deepnets:test/0", "--data", "cifar10", "--data-root", "/nonexistent"], "CIFAR-10 not found"),
])
def test_rank_cli_bad_input_exits_2_without_traceback(ghn_ckpt, argv, message, capsys):
    from train.rank_cli import main

    assert main([*argv, "--ckpt", ghn_ckpt]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("ghn rank: error:")


def test_rank_cli_rejects_a_ghn_for_another_number_of_classes(tmp_path, capsys):
    from train.rank_cli import main

    ckpt = save_tiny_ghn(tmp_path / "ghn5.safetensors", num_classes=5)
    assert main(["deepnets:test/0", "--ckpt", ckpt]) == 2
    assert "predicts 5-class classifiers but the data has 10 classes" in capsys.readouterr().err
    assert main(["deepnets:test/0", "--ckpt", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
