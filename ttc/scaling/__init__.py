"""Scaling analysis of test-time compute: coverage power laws, efficiency multipliers,
compute-optimal allocation, the FLOPs-matched pretraining/inference exchange, saturation budgets.

NumPy plus SciPy (``scipy.stats``, ``scipy.special``, ``scipy.optimize``). Everything here works
on already-measured accuracy numbers; it never runs a model. Conventions shared by all functions:

* A **budget** is whatever the caller's x-axis counts: a number of generations ``N`` (best-of-N,
  beam width, particles) or FLOPs per problem from the ledger (``ttc.flops``). Functions that
  interpolate between budgets do so **linearly in log budget**, the axis on which TTC curves are
  plotted and close to linear.
* **Coverage** ``c(k)`` is the fraction of problems solved by at least one of ``k`` samples
  (pass@k with an oracle verifier; estimate it with ``ttc.metrics.pass_at_k``).
* ``pass1_per_problem`` is a ``[P]`` array of per-problem single-attempt success probabilities
  (typically ``c_i / n_i`` from ``n_i`` samples).
* A **monotone-ized** accuracy curve is the running maximum over increasing budget: what the best
  configuration costing at most that budget achieves (more budget can always be left unused).

Modules, by topic:

* ``power_law``: the exponentiated power law of coverage (Brown et al. 2024, "Large Language
  Monkeys: Scaling Inference Compute with Repeated Sampling") and coverage from pass@1.
* ``distributional``: the exponent from the pass@1 distribution (Schaeffer et al. 2025, "How Do
  Large Language Monkeys Get Their Power (Laws)?").
* ``efficiency``: monotone curves, budget to reach an accuracy, efficiency multiplier.
* ``allocation``: difficulty bins and compute-optimal allocation (Snell et al. 2024, "Scaling
  LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters").
* ``exchange``: the FLOPs-matched pretraining/inference exchange (Snell et al. 2024, §7).
* ``saturation``: measured and predicted saturation budgets.
"""

from ttc.scaling.allocation import (
    ComputeOptimalResult,
    compute_optimal,
    difficulty_bins,
    oracle_difficulty,
    predicted_difficulty,
)
from ttc.scaling.distributional import DistributionalFit, distributional_exponent
from ttc.scaling.efficiency import efficiency_multiplier, flops_to_reach, monotone_curve
from ttc.scaling.exchange import (
    flops_matched_comparison,
    inference_flops,
    inference_multiplier,
    pretraining_flops,
)
from ttc.scaling.power_law import coverage_from_pass1, fit_power_law, predict_coverage
from ttc.scaling.saturation import predicted_saturation, saturation_budget

__all__ = [
    "ComputeOptimalResult",
    "DistributionalFit",
    "compute_optimal",
    "coverage_from_pass1",
    "difficulty_bins",
    "distributional_exponent",
    "efficiency_multiplier",
    "fit_power_law",
    "flops_matched_comparison",
    "flops_to_reach",
    "inference_flops",
    "inference_multiplier",
    "monotone_curve",
    "oracle_difficulty",
    "predict_coverage",
    "predicted_difficulty",
    "predicted_saturation",
    "pretraining_flops",
    "saturation_budget",
]
