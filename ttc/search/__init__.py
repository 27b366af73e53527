"""Test-time compute methods: aggregation primitives, pool estimators and search loops."""

from ttc.search.aggregate import best_of_n, majority_vote, vote_scores

__all__ = ["best_of_n", "majority_vote", "vote_scores"]
