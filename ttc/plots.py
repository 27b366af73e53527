"""Matplotlib figures: accuracy-vs-FLOPs Pareto plot (log x), one line per method."""

from __future__ import annotations

import csv
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ttc.metrics import pareto_frontier


def frontier_rows(records: list[dict], flops_key: str = "flops_useful") -> list[dict]:
    """Records on the (FLOPs, accuracy) Pareto frontier, oracle methods excluded."""
    recs = [r for r in records if not r.get("oracle")]
    if not recs:
        return []
    idx = pareto_frontier([[r[flops_key], r["accuracy"]] for r in recs])
    return [recs[i] for i in idx]


def plot_pareto(records: list[dict], path: str | os.PathLike, *, flops_key: str = "flops_useful",
                title: str = "accuracy vs inference FLOPs") -> None:
    """Writes ``path``: one curve per method (mean over seeds), frontier marked."""
    by = defaultdict(lambda: defaultdict(list))
    for r in records:
        by[r["method"]][r["budget"]].append(r)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab20").colors
    markers = "osD^v<>pPX*h"
    for i, method in enumerate(sorted(by)):
        budgets = sorted(by[method])
        x = [np.mean([r[flops_key] for r in by[method][b]]) for b in budgets]
        y = [np.mean([r["accuracy"] for r in by[method][b]]) for b in budgets]
        oracle = any(r.get("oracle") for b in budgets for r in by[method][b])
        ax.plot(x, y, "--" if oracle else "-", marker=markers[i % len(markers)], ms=4,
                color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                label=method + (" (oracle)" if oracle else ""), alpha=0.6 if oracle else 1.0)
    front = frontier_rows(records, flops_key)
    if front:
        ax.plot([r[flops_key] for r in front], [r["accuracy"] for r in front], "k:", lw=1)
        ax.scatter([r[flops_key] for r in front], [r["accuracy"] for r in front],
                   s=70, facecolors="none", edgecolors="k", label="Pareto frontier", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel(f"{flops_key.replace('_', ' ')} per problem")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_FRONTIER_FIELDS = ("method", "budget", "seed", "accuracy", "flops_useful", "flops_executed")


def write_frontier_csv(records: list[dict], path: str | os.PathLike,
                       flops_key: str = "flops_useful") -> list[dict]:
    """Writes the Pareto-frontier records as CSV (``csv`` module quoting, so any method label
    round-trips through ``csv.DictReader``); returns them."""
    front = frontier_rows(records, flops_key)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(_FRONTIER_FIELDS)
        for r in front:
            writer.writerow([r["method"], r["budget"], r["seed"], f"{r['accuracy']:.4f}",
                             f"{r['flops_useful']:.6g}", f"{r['flops_executed']:.6g}"])
    return front
