"""The cells of an evaluation: one per (method, budget, seed), keyed in the results store."""

from __future__ import annotations

import dataclasses

from ttc import registry as REG
from ttc.evaluate.config import EvalConfig
from ttc.methods import MethodSpec
from ttc.results import ResultsStore, cell_key


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cell:
    """One (method, budget, seed) cell.

    Attributes:
        method: the method.
        budget: generations (pool methods) or rows (search methods) per problem.
        seed: the sampling seed.
        key: its results-store key (:func:`ttc.results.cell_key`).
    """

    method: MethodSpec
    budget: int
    seed: int
    key: str

    @property
    def is_pool(self) -> bool:
        """Whether the cell is estimated from the seed's shared pool."""
        return self.method.kind == REG.KIND_POOL


def seed_cells(methods: list[MethodSpec], cfg: EvalConfig, seed: int, tag: str) -> list[Cell]:
    """Every cell of ``seed``, in method order then budget order."""
    return [Cell(method=m, budget=int(b), seed=int(seed), key=cell_key(m.label, int(b),
                                                                         int(seed), tag))
            for m in methods for b in m.budgets(cfg.budgets, cfg.search_budgets)]


def unrecorded(cells: list[Cell], store: ResultsStore) -> list[Cell]:
    """The cells without a record in ``store`` (resume: the others are done)."""
    return [c for c in cells if not store.has(c.key)]


def claim_all(cells: list[Cell], store: ResultsStore) -> list[Cell]:
    """Claims each of ``cells`` for this process; returns those it got (the others are recorded
    or held by another live process)."""
    return [c for c in cells if store.claim(c.key)]
