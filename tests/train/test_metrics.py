"""metrics.csv: rows appended with a header, and the rows after a checkpoint dropped when a run resumes."""

import csv

from train.metrics import METRIC_FIELDS, append_metrics, truncate_metrics


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_append_then_truncate_keeps_the_rows_up_to_the_step(tmp_path):
    path = str(tmp_path / "metrics.csv")
    truncate_metrics(path, 3)  # no file yet: nothing to do
    for step in range(1, 6):
        append_metrics(path, {"step": step, "loss": 1.0 / step, "lr": 1e-3, "not_a_column": "x"})
    rows = read(path)
    assert open(path).readline().strip() == ",".join(METRIC_FIELDS)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5"] and rows[2]["loss"] == "0.333333"
    truncate_metrics(path, 3)
    assert [(r["step"], r["loss"], r["lr"]) for r in read(path)] == [("1", "1", "0.001"), ("2", "0.5", "0.001"),
                                                                     ("3", "0.333333", "0.001")]
    append_metrics(path, {"step": 4, "loss": 0.2})
    assert [r["step"] for r in read(path)] == ["1", "2", "3", "4"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # the atomic rewrite left no temp file
