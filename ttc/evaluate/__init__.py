"""Runs methods over a budget grid and writes one record per (method, budget, seed) cell.

Hydra-free: the main job (``ttc.cli.run``) builds the pieces from config and calls
:func:`evaluate`. Finished cells already in the store are skipped (resume); pools of samples are
cached under the run directory so an interrupted aggregation does not re-sample; concurrent
writers sharing a store claim cells and pools so that none is computed twice.

Modules: :mod:`~ttc.evaluate.config` (what to evaluate on, the config hash),
:mod:`~ttc.evaluate.cells` (which cells, resume, claims), :mod:`~ttc.evaluate.pools` (sampling
and caching pools), :mod:`~ttc.evaluate.sources` (verifiers, scoring a pool once per verifier),
:mod:`~ttc.evaluate.records` (records, wall-time shares, the table) and
:mod:`~ttc.evaluate.core` (the loop and the per-cell evaluation of pool and search methods).
FLOP ledgers are built by :mod:`ttc.ledger`.
"""

from ttc.evaluate.config import EvalConfig, config_tag, run_tag
from ttc.evaluate.core import evaluate
from ttc.evaluate.records import format_table
from ttc.evaluate.sources import RewardSource, reward_key, score_pool

__all__ = ["EvalConfig", "RewardSource", "config_tag", "evaluate", "format_table",
           "reward_key", "run_tag", "score_pool"]
