"""Test-time compute methods: aggregation primitives, resampling, pool estimators and search loops.

``resample`` and ``ess`` are the particle-filtering primitives of ``ttc.search.resampling``
(Douc & Cappé 2005 schemes, named in ``SCHEMES``); ``best_of_n``, ``majority_vote`` and
``vote_scores`` the final aggregations of ``ttc.search.aggregate``.
"""

from ttc.search.aggregate import best_of_n, majority_vote, vote_scores
from ttc.search.resampling import SCHEMES, ess, resample

__all__ = ["SCHEMES", "best_of_n", "ess", "majority_vote", "resample", "vote_scores"]
