"""Tests for :mod:`train.candidates`, :mod:`train.rank` and ``ghn rank`` (:mod:`train.rank_cli`) at debug size."""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from archspace.errors import UsageError
from archspace.sampler import get_genotype, get_net
from train.accuracy import accuracy
from train.candidates import CandidateError, one_candidate, parse_candidates
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

from .helpers import SMALL, assert_usage_error, break_plot, run_ghn, save_tiny_ghn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ghn_ckpt(tmp_path_factory) -> str:
    return save_tiny_ghn(tmp_path_factory.mktemp("ghn") / "ghn.safetensors")


# ---- candidate lists ------------------------------------------------------------------------------------------


def test_deepnets_ranges_and_bare_tokens_continue_the_split():
    names = [c.name for c in parse_candidates(["deepnets:test/0-2,5", "deepnets:val/7"])]
    assert names == ["deepnets:test/0", "deepnets:test/1", "deepnets:test/2", "deepnets:test/5", "deepnets:val/7"]
    assert len(parse_candidates(["deepnets:bnfree"])) == 100


def test_torchvision_list_and_duplicates_dropped():
    cands = parse_candidates(["torchvision:resnet18,vgg11_bn", "torchvision:resnet18"])
    assert [c.spec for c in cands] == ["torchvision:resnet18", "torchvision:vgg11_bn"]


def test_timm_list_continues_the_scheme_and_builds_nothing_pretrained():
    pytest.importorskip("timm", reason="timm is not installed (pip install 'ghn-archspace[timm]')")
    cands = parse_candidates(["timm:convnext_atto,resnet18"])
    assert [c.spec for c in cands] == ["timm:convnext_atto", "timm:resnet18"]
    model = cands[0].build(num_classes=10, image_size=32)
    assert model.num_classes == 10 and sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(UsageError, match="unknown timm model 'convnxt_atto'; did you mean convnext_atto"):
        parse_candidates(["timm:convnxt_atto"])


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


def test_bad_candidate_files_are_explained(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, index in (("a", 3), ("b", 4)):  # the same file name in two folders: both lines named g.jsonl:1
        (tmp_path / folder / "g.jsonl").write_text(json.dumps(get_genotype("test", index).to_dict()) + "\n")
    with pytest.raises(CandidateError, match="two different candidates are both named 'g.jsonl:1'"):
        parse_candidates([str(tmp_path / "a" / "g.jsonl"), str(tmp_path / "b" / "g.jsonl")])
    same = parse_candidates([str(tmp_path / "a" / "g.jsonl"), str(tmp_path / "a" / "g.jsonl")])
    assert [c.name for c in same] == ["g.jsonl:1"]  # the same candidate twice: one
    named = tmp_path / "named.jsonl"
    named.write_text("".join(json.dumps({"name": "x", "genotype": get_genotype("test", i).to_dict()}) + "\n"
                             for i in (0, 1)))
    with pytest.raises(CandidateError, match="both named 'x'"):
        parse_candidates([str(named)])
    (tmp_path / "self.txt").write_text(str(tmp_path / "loop.txt") + "\n")
    (tmp_path / "loop.txt").write_text(str(tmp_path / "self.txt") + "\n")
    with pytest.raises(CandidateError, match="lists itself"):
        parse_candidates([str(tmp_path / "self.txt")])
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\n")
    with pytest.raises(CandidateError, match="not a UTF-8 text file"):
        parse_candidates([str(tmp_path / "binary.jsonl")])


@pytest.mark.parametrize("args, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    (["tests.train.helpers:cnn_33"], "did you mean cnn_32"),
    ([], "empty"),
    ([" , "], "empty"),
    (["deepnets:nosuch/0"], "unknown DeepNets-1M split"),
    (["deepnets:tset/0"], "did you mean test"),
    (["deepnets:test/499-500"], "out of range"),
    (["deepnets:test/5-2"], "LOW <= HIGH"),
    (["deepnets:test/x"], "bad index"),
    (["deepnets:train"], "give a range"),
    (["resnet18"], "cannot tell what"),
    (["no/such/file.jsonl"], "cannot tell what"),
    (["file:no/such/file.jsonl"], "does not exist"),
])
def test_bad_candidate_lists_are_explained(args, message):
    with pytest.raises(UsageError, match=message):
        parse_candidates(args)


def test_one_candidate_refuses_a_list():
    built = one_candidate("deepnets:test/7", width=8).build(image_size=16)
    ref = get_net("test", 7, image_size=16, width=8)
    assert [p.shape for p in built.parameters()] == [p.shape for p in ref.parameters()]
    with pytest.raises(CandidateError, match="names 3 architectures"):
        one_candidate("deepnets:test/0-2")


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
    assert [r.accuracy for r in ranked[:3]] == sorted((r.accuracy for r in rows[:3]), reverse=True)

    out = tmp_path / "r.csv"
    write_csv(ranked, str(out))
    table = list(csv.DictReader(out.open()))
    assert [t["name"] for t in table] == [r.name for r in ranked]
    assert table[-1]["error"].startswith("RuntimeError") and table[0]["rank"] == "1"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # atomic write leaves no temp file
    text = format_table(ranked, top=2)
    assert "1 more" in text and "deepnets:test/3" in text


def test_a_class_mismatch_stops_scoring_instead_of_failing_each_candidate(digits, tmp_path):
    from ghn import GHN
    from ghn.model import ClassMismatchError
    from train.rank import ghn_predictor

    ghn = GHN.load(save_tiny_ghn(tmp_path / "g5.safetensors", num_classes=5))
    batches = eval_batches(digits, "heldout", limit=64)
    with pytest.raises(ClassMismatchError):
        score_candidates(parse_candidates(["deepnets:test/0-1"], width=8), ghn_predictor(ghn, 32), batches,
                         num_classes=10, image_size=32)



def test_ghn_predictor_widens_nets_wider_than_the_ghns_training_widths(digits, tmp_path):
    """By default the predictor widens from the widest width the loaded GHN was trained on: a width-8 net then
    computes what its width-4 sibling computes; ``widen_from=None`` predicts it directly, and a GHN that does not
    record its widths predicts directly too."""
    from ghn import GHN
    from train.rank import ghn_predictor

    path = tmp_path / "g4.safetensors"
    torch.manual_seed(0)
    GHN(max_shape=(16, 16, 3, 3), num_classes=10, hidden_dim=8).save(str(path), extra={"train_width_range": [4, 4]})
    ghn = GHN.load(str(path))
    x = next(iter(eval_batches(digits, "heldout", batch_size=32, limit=32)))[0]

    def logits(width, predictor):
        torch.manual_seed(0)
        net = one_candidate("deepnets:test/0", width=width).build(num_classes=10, image_size=32)
        predictor(net).eval()
        with torch.no_grad():
            return net(x)

    auto = ghn_predictor(ghn, 32)
    assert auto.widen_from == 4 and ghn_predictor(ghn, 32, widen_from=None).widen_from is None
    narrow = logits(4, auto)
    assert torch.allclose(logits(8, auto), narrow, atol=1e-4)
    assert not torch.allclose(logits(8, ghn_predictor(ghn, 32, widen_from=None)), narrow, atol=1e-2)
    assert ghn_predictor(GHN.load(save_tiny_ghn(tmp_path / "plain.safetensors")), 32).widen_from is None
    with pytest.raises(ValueError, match="widen_from must be a width, None or 'trained'"):
        ghn_predictor(ghn, 32, widen_from="widest")

def test_rank_by_loss_and_trained_rank():
    rows = [RankRow("a", accuracy=50, loss=1.0, trained_accuracy=70, trained_loss=0.5),
            RankRow("b", accuracy=50, loss=0.5, trained_accuracy=80, trained_loss=0.4),
            RankRow("c", accuracy=60, loss=2.0, trained_accuracy=60, trained_loss=0.9)]
    assert [r.name for r in rank_rows(rows)] == ["c", "b", "a"]  # ties on accuracy broken by loss
    assert [r.name for r in rank_rows(rows, by="loss")] == ["b", "a", "c"]
    assert {r.name: r.trained_rank for r in rows} == {"b": 1, "a": 2, "c": 3}
    with pytest.raises(ValueError, match="embed"):
        rank_rows(rows, by="embed")


def test_embedding_regressor_ranks_held_out_architectures_by_a_linear_property(tmp_path):
    from train.correlation import rank_correlation

    rng = np.random.default_rng(0)
    w = np.array([1.0, -2.0, 0.0, 0.5, 0.0])
    x, held = rng.normal(size=(80, 5)), rng.normal(size=(20, 5))  # (L, D) labelled, (C, D) held out
    reg = fit_embedding_regressor(x, x @ w + 3)
    scores = reg.predict(held)  # (C,)
    assert np.abs(scores - (held @ w + 3)).mean() < 0.2  # the property's standard deviation is 2.4
    assert rank_correlation(scores, held @ w).kendall_tau > 0.9
    order = [r.name for r in rank_rows([RankRow(str(i), embed_score=float(v)) for i, v in enumerate(scores)],
                                       by="embed")]
    assert order[0] == str(int(np.argmax(held @ w)))  # the true best first
    labels = tmp_path / "l.csv"
    labels.write_text("name,accuracy\ndeepnets:train/1,55.5\ndeepnets:train/2,60\n")
    assert read_labels(str(labels)) == {"deepnets:train/1": 55.5, "deepnets:train/2": 60.0}
    labels.write_text("name,accuracy\ndeepnets:train/1,high\n")
    with pytest.raises(UsageError, match="not a number"):
        read_labels(str(labels))


# ---- ghn rank end to end --------------------------------------------------------------------------------------


def test_rank_cli_scores_validates_and_writes(ghn_ckpt, tmp_path, capsys):
    from ghn import GHN
    from train.rank import train_to_convergence

    out, png = tmp_path / "ranking.csv", tmp_path / "rank.png"
    status, printed, err = run_ghn(["rank", "deepnets:test/0-3", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "128",
                                    "--score", "ghn_acc", "--validate", "3", "--train-batch-size", "32",
                                    "--plot", str(png), "--out", str(out)], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["name"] for r in rows) == [f"deepnets:test/{i}" for i in range(4)]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert sorted(int(r["trained_rank"]) for r in rows) == [1, 2, 3, 4]
    accs = [float(r["accuracy"]) for r in rows]
    summary = json.loads((tmp_path / "ranking.summary.json").read_text())
    assert summary["score"] == "ghn_acc"
    trained_acc = [float(r["trained_accuracy"]) for r in rows]
    expected = rank_correlation(accs, trained_acc)
    report = summary["validation"]["rankers"]
    assert report["ghn_acc"]["kendall_tau"] == pytest.approx(expected.kendall_tau)
    assert report["ghn_acc"]["spearman_rho"] == pytest.approx(expected.spearman_rho)
    low, high = report["ghn_acc"]["kendall_tau_ci"]
    assert -1 <= low <= high <= 1
    # the baselines are judged on the same trained accuracies
    assert set(report) == {"ghn_acc", "params", "flops", "depth", "random"}
    params = [float(r["params"]) for r in rows]
    assert report["params"]["kendall_tau"] == pytest.approx(rank_correlation(params, trained_acc).kendall_tau)
    # top-k precision with k capped at half the candidates: of the 2 best trained nets, how many params puts first;
    # ties broken by the candidates' input order (test/0 first), not by the ranker's order of the CSV
    order = sorted(range(4), key=lambda i: int(rows[i]["name"].rsplit("/", 1)[1]))
    best = set(sorted(order, key=lambda i: -trained_acc[i])[:2])
    by_params = set(sorted(order, key=lambda i: -params[i])[:2])
    assert report["params"]["k"] == 2 and report["params"]["top_k_precision"] == len(best & by_params) / 2
    assert "Kendall tau" in printed and "Spearman rho" in printed and "top-2 precision" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the CSV accuracy is the accuracy of the predicted parameters, BN with batch statistics, batches of 64 ...
    data = load_digits(image_size=16)
    held = eval_batches(data, "heldout", limit=128)
    row = next(r for r in rows if r["name"] == "deepnets:test/2")
    torch.manual_seed(0)
    model = GHN.load(ghn_ckpt).predict(get_net("test", 2, image_size=16, width=8), input_size=16)
    assert float(row["accuracy"]) == pytest.approx(accuracy(model, held, bn_mode="batch").top1, abs=1e-3)
    # ... and the trained accuracy is the benchmark's yardstick (same code) from the same default initialisation,
    # on the whole held-out split
    torch.manual_seed(0)
    trained = train_to_convergence(get_net("test", 2, image_size=16, width=8), data,
                                   eval_batches(data, "heldout", batch_size=100), steps=3, batch_size=32)
    assert float(row["trained_accuracy"]) == pytest.approx(trained.top1, abs=1e-3)


@pytest.mark.parametrize("score", ["synflow", "jacob_cov@ghn", "params", "sgd3@ghn", "vote", None])
def test_rank_cli_ranks_by_the_chosen_score(ghn_ckpt, tmp_path, capsys, score):
    from train.scores import DEFAULT_SCORE, VOTE

    out = tmp_path / "r.csv"
    status, _, err = run_ghn(["rank", "deepnets:test/0-3", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "64",
                              *(["--score", score] if score else []), "--out", str(out)], capsys)
    score = score or DEFAULT_SCORE
    assert status == 0, err
    rows = list(csv.DictReader(out.open()))
    values = [float(r[score]) for r in rows]
    assert values == sorted(values, reverse=True) and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    if score == "vote":  # the rank average of its members over these candidates
        column = {"ghn_acc": lambda r: float(r["accuracy"]), "ghn_loss": lambda r: -float(r["loss"])}
        members = [[column.get(m, lambda r, m=m: float(r[m]))(r) for r in rows] for m in VOTE]
        from train.scores import rank_average

        np.testing.assert_allclose(values, rank_average(members), atol=1e-3)  # the CSV has 4 decimals
    assert json.loads((tmp_path / "r.summary.json").read_text())["score"] == score


def test_rank_cli_jobs_give_the_scores_and_validation_of_one_thread(ghn_ckpt, tmp_path, capsys):
    """Worker processes of one thread compute each candidate as one thread here does; --jobs auto (a training
    ranker: one process per core) gives the same table whatever the machine's core count."""
    from ghn.threads import auto_threads

    tables = []
    for i, opts in enumerate((["--jobs", "1", "--threads", "1"], ["--jobs", "2"], [])):
        out = tmp_path / f"r{i}.csv"
        status, _, err = run_ghn(["rank", "deepnets:test/0-4", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "64",
                                  "--score", "sgd3@ghn", "--validate", "3", "--train-batch-size", "32", *opts,
                                  "--out", str(out)], capsys)
        assert status == 0, err
        jobs = json.loads((tmp_path / f"r{i}.summary.json").read_text())["jobs"]
        assert jobs == (int(opts[1]) if opts else min(auto_threads(), 5))
        tables.append([{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(out.open())])
    assert tables[0] == tables[1] == tables[2]
    assert all(r["trained_accuracy"] for r in tables[1]) and len(tables[1]) == 5


def test_rank_cli_embedding_scores_are_the_regressor_fitted_on_the_labelled_nets(ghn_ckpt, tmp_path, capsys):
    from ghn import GHN
    from train.rank import embed_candidates, ghn_embedder

    labels = tmp_path / "labels.csv"
    labels.write_text("name,accuracy\n" + "".join(f"deepnets:train/{i},{10 * i}\n" for i in range(5)))
    out = tmp_path / "r.csv"
    status, _, err = run_ghn(["rank", "deepnets:test/0-2", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "64",
                              "--embed-regressor", str(labels), "--score", "embed", "--out", str(out)], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(out.open()))
    # by hand: embed the labelled nets and the candidates as built (seed 0, width 8, 16x16), fit, predict
    embed = ghn_embedder(GHN.load(ghn_ckpt), 16)
    kw = dict(num_classes=10, image_size=16)
    labelled = parse_candidates([f"deepnets:train/{i}" for i in range(5)], width=8)
    reg = fit_embedding_regressor(embed_candidates(labelled, embed, **kw), [10.0 * i for i in range(5)])
    cands = parse_candidates(["deepnets:test/0-2"], width=8)
    expected = dict(zip([c.name for c in cands], reg.predict(embed_candidates(cands, embed, **kw))))
    assert [r["name"] for r in rows] == sorted(expected, key=lambda n: -expected[n])
    for r in rows:
        assert float(r["embed_score"]) == pytest.approx(expected[r["name"]], abs=1e-3)


def test_rank_cli_writes_the_csv_before_a_plot_that_fails(ghn_ckpt, tmp_path, capsys, monkeypatch):
    break_plot(monkeypatch, "plot_rank_scatter")
    out = tmp_path / "ranking.csv"
    with pytest.raises(RuntimeError, match="no display"):
        run_ghn(["rank", "deepnets:test/0-1", "--ckpt", ghn_ckpt, *SMALL, "--eval-images", "64", "--validate", "1",
                 "--train-batch-size", "16", "--plot", str(tmp_path / "r.png"), "--out", str(out)], capsys)
    assert len(list(csv.DictReader(out.open()))) == 2
    assert json.loads((tmp_path / "ranking.summary.json").read_text())["validation"]["n"] == 2


@pytest.mark.parametrize("argv, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    ([","], "candidate list is empty"),
    (["deepnets:test/0", "--width", "0"], "--width must be >= 2, got 0"),
    (["deepnets:test/0", "--threads", "0"], "threads must be a positive integer, 'auto' or null, got '0'"),
    (["deepnets:test/0", "--eval-images", "0"], "--eval-images must be >= 1, got 0"),
    (["deepnets:test/0", "--validate", "-1"], "--validate must be >= 0, got -1"),
    (["deepnets:test/0", "--train-batch-size", "0", "--validate", "2"], "--train-batch-size must be >= 1"),
    (["deepnets:test/0", "--lr", "0"], "--lr must be > 0, got 0"),
    (["deepnets:test/0", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["deepnets:test/0", "--jobs", "many"], "--jobs must be a number of processes or 'auto', got 'many'"),
    (["deepnets:test/0", "--plot", "x.png"], "add --validate"),
    (["deepnets:test/0", "--score", "embed"], "needs --embed-regressor"),
    (["deepnets:test/0", "--score", "sgd0"], "--score: unknown score 'sgd0'"),
    (["deepnets:test/0", "--score", "synflw"], "--score: unknown score 'synflw'"),
    (["deepnets:test/0", "--rank-by", "embed"], "needs --embed-regressor"),  # the old name of --score
    (["deepnets:test/0", "--rank-by", "loss", "--score", "synflow"], "disagree"),
    (["deepnets:test/0", "--score", "synflow", "--embed-regressor", "l.csv"], "fits the ranker of --score embed"),
    (["deepnets:test/0", "--embed-regressor", "no/labels.csv"], "labels file 'no/labels.csv' does not exist"),
    (["deepnets:test/0", "--validate", "1", "--train-batch-size", "100000"], "larger than the 1437 training"),
    (["deepnets:test/0", "--data", "cifar10", "--data-root", "/nonexistent"], "/nonexistent"),
    (["deepnets:test/0", "--device", "nonsense"], "is not a torch device"),
    (["deepnets:test/0", "--seed", "-1"], "--seed must be >= 0, got -1"),  # the random baseline's seed
])
def test_rank_cli_bad_input_is_one_line(ghn_ckpt, argv, message, capsys):
    assert_usage_error(*run_ghn(["rank", *argv, "--ckpt", ghn_ckpt], capsys)[::2], message)


def test_rank_cli_cuda_without_a_gpu_is_one_line(ghn_ckpt, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = run_ghn(["rank", "deepnets:test/0", "--ckpt", ghn_ckpt, "--device", "cuda"], capsys)
    assert_usage_error(status, err, "--device=cuda but torch sees no CUDA device")


def test_rank_cli_refuses_unwritable_outputs_before_any_work(ghn_ckpt, tmp_path, capsys, monkeypatch):
    import train.data

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the outputs were checked")

    monkeypatch.setattr(train.data, "load_image_data", no_data)
    status, _, err = run_ghn(["rank", "deepnets:test/0", "--ckpt", ghn_ckpt, "--out", str(tmp_path)], capsys)
    assert_usage_error(status, err, f"--out {tmp_path} is a directory")
    status, _, err = run_ghn(["rank", "deepnets:test/0", "--ckpt", ghn_ckpt, "--validate", "1",
                              "--plot", str(tmp_path)], capsys)
    assert_usage_error(status, err, f"--plot {tmp_path} is a directory")


@pytest.mark.parametrize("ckpt", ["missing.safetensors", "."])
def test_rank_cli_bad_checkpoint_is_one_line(ckpt, tmp_path, capsys):
    path = str(tmp_path / ckpt)
    status, _, err = run_ghn(["rank", "deepnets:test/0", "--ckpt", path], capsys)
    line = assert_usage_error(status, err, "")
    assert os.path.normpath(path).rstrip("/.") in line or str(tmp_path) in line


def test_rank_cli_ghn_for_another_number_of_classes(tmp_path, capsys):
    ckpt = save_tiny_ghn(tmp_path / "ghn5.safetensors", num_classes=5)
    argv = ["rank", "deepnets:test/0-1", "--ckpt", ckpt, *SMALL, "--eval-images", "64"]
    status, _, err = run_ghn(argv, capsys)
    line = assert_usage_error(status, err, "--keep-classifier-init")
    assert "5 classes" in line and "10 outputs" in line
    out = tmp_path / "r.csv"
    status, _, err = run_ghn([*argv, "--keep-classifier-init", "--out", str(out)], capsys)
    assert status == 0, err
    assert "classifier default init (--keep-classifier-init)" in err
    assert json.loads((tmp_path / "r.summary.json").read_text())["classifier"].startswith("default init")
    assert [r.get("error") for r in csv.DictReader(out.open())] == [None, None]  # both scored


def test_rank_cli_model_that_does_not_run_at_the_input_size(ghn_ckpt, capsys):
    status, _, err = run_ghn(["rank", "tests.train.helpers:cnn_32", "--ckpt", ghn_ckpt, "--image-size", "16",
                              "--eval-images", "64"], capsys)
    line = assert_usage_error(status, err, "no candidate could be scored")
    assert "InputSizeError" in line and "input size 16" in line


def test_rank_rows_orders_by_hand_built_scores():
    rows = [RankRow("a", accuracy=50.0, loss=1.0, trained_accuracy=90.0, trained_loss=0.3),
            RankRow("b", accuracy=70.0, loss=0.9, trained_accuracy=80.0, trained_loss=0.5),
            RankRow("c", accuracy=50.0, loss=0.7, trained_accuracy=90.0, trained_loss=0.2),
            RankRow("d", error="RuntimeError: broken"),
            RankRow("e", accuracy=10.0, loss=2.0)]
    by_acc = rank_rows(rows)
    # Higher accuracy first, a tie (a, c at 50%) broken by the lower loss; failed rows last without a rank.
    assert [(r.name, r.rank) for r in by_acc] == [("b", 1), ("c", 2), ("a", 3), ("e", 4), ("d", None)]
    assert {r.name: r.trained_rank for r in by_acc} == {"c": 1, "a": 2, "b": 3, "e": None, "d": None}
    assert [r.name for r in rank_rows(rows, by="loss")] == ["c", "b", "a", "e", "d"]
    with pytest.raises(ValueError, match="embed needs embedding-regressor scores"):
        rank_rows(rows, by="embed")


@pytest.mark.parametrize("accs, diverged, expected", [
    ([10.0, 50.0, 85.0, 92.0, 95.0], None, (95.0, 30)),  # 90% of 95 is 85.5: first reached at step 30
    ([30.0, 12.0, 11.0, 13.0, 15.0], None, (15.0, 40)),  # ends within twice chance: learned nothing, "never"
    ([10.0, 50.0], 12, (10.0, 40)),  # diverged: chance accuracy, never
])
def test_train_to_convergence_final_accuracy_and_steps_to_90(monkeypatch, digits, accs, diverged, expected):
    import train.rank as rank
    from train.finetune import Curve

    def fake_train_sgd(net, data, *, steps, eval_every, **kw):
        assert steps == 40 and eval_every == 4  # TRAINED_EVALS evaluations over the run
        n = len(accs)
        return Curve(eval_steps=[10 * i for i in range(n)], accuracy=accs, eval_loss=[1.0] * n,
                     diverged_at=diverged)

    monkeypatch.setattr(rank, "train_sgd", fake_train_sgd)
    t = rank.train_to_convergence(torch.nn.Linear(2, 2), digits, [], steps=40)
    assert (t.top1, t.steps_to_90) == expected
    assert (t.loss == math.inf) == (diverged is not None)
