"""Tests of ttc.plots: frontier.csv is valid CSV whatever the method labels contain."""

import csv

from ttc.plots import write_frontier_csv


def _record(method, budget, accuracy, flops):
    return {"method": method, "budget": budget, "seed": 0, "accuracy": accuracy,
            "flops_useful": flops, "flops_executed": 2 * flops}


def test_frontier_csv_round_trips_labels_with_comma_and_quote(tmp_path):
    tricky = 'beam(M=4, agg="min")'
    records = [_record(tricky, 4, 0.5, 1e9), _record("best_of_n", 16, 0.7, 4e9),
               _record("majority", 16, 0.4, 4e9)]  # dominated: not on the frontier
    path = tmp_path / "frontier.csv"
    front = write_frontier_csv(records, path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [tricky, "best_of_n"] == [r["method"] for r in front]
    assert list(rows[0]) == ["method", "budget", "seed", "accuracy", "flops_useful",
                             "flops_executed"]
    assert rows[0]["budget"] == "4" and float(rows[0]["accuracy"]) == 0.5
    assert float(rows[1]["flops_useful"]) == 4e9 and float(rows[1]["flops_executed"]) == 8e9
