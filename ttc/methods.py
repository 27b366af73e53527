"""The method registry of the main job: names, parameters, and how each is evaluated.

* **pool** methods sample one pool of ``max(budgets)`` complete solutions per problem and are
  evaluated at every budget from it with unbiased subset estimators (``ttc.search.pool``):
  ``single``, ``majority``, ``bon_loglik``, ``coverage`` (oracle pass@N), ``bon`` (best-of-N by a
  reward) and ``weighted_majority`` (reward-weighted vote).
* **search** methods run once per budget (``ttc.search.loop``): ``beam``, ``dvts``,
  ``lookahead``, ``particle``.

Parameters (all optional): ``reward`` (``prm|orm|oracle``), ``aggregation``
(``last|min|prod|mean``), ``flip``/``noise`` (oracle), ``beam_width``, ``lookahead``,
``final``, ``incremental``, ``scheme``, ``temperature`` (particle weights), ``ess_threshold``,
``length_normalize`` (bon_loglik), ``label`` (the name shown in records and plots).
"""

from __future__ import annotations

import dataclasses

from ttc.errors import ConfigError
from ttc.rewards import AGGREGATIONS, KINDS
from ttc.search import pool
from ttc.search.loop import METHODS as SEARCH_METHODS
from ttc.search.loop import SearchConfig, SearchParams

POOL_METHODS = (*pool.POOL_METHODS, "bon", "weighted_majority")
ALL_METHODS = POOL_METHODS + SEARCH_METHODS
ORACLE_METHODS = {"coverage"}

_PARAMS = {
    "single": set(),
    "majority": set(),
    "coverage": set(),
    "bon_loglik": {"length_normalize"},
    "bon": {"reward", "aggregation", "flip", "noise"},
    "weighted_majority": {"reward", "aggregation", "flip", "noise"},
    "beam": {"reward", "aggregation", "flip", "noise", "beam_width", "final"},
    "dvts": {"reward", "aggregation", "flip", "noise", "beam_width", "final"},
    "lookahead": {"reward", "aggregation", "flip", "noise", "beam_width", "lookahead", "final"},
    "particle": {"reward", "aggregation", "flip", "noise", "final", "incremental", "scheme",
                 "temperature", "ess_threshold"},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One method of the grid: its registered ``name``, ``label`` and sorted parameters."""

    name: str
    label: str
    params: tuple[tuple[str, object], ...] = ()

    def get(self, k: str, default=None):
        return dict(self.params).get(k, default)

    @property
    def kind(self) -> str:
        return "search" if self.name in SEARCH_METHODS else "pool"

    @property
    def reward(self) -> str | None:
        if self.name in ("single", "majority", "bon_loglik", "coverage"):
            return None
        return str(self.get("reward", "prm"))

    @property
    def oracle(self) -> bool:
        return self.name in ORACLE_METHODS

    def search_config(self) -> SearchConfig:
        keys = ("beam_width", "lookahead", "aggregation", "final", "incremental", "scheme")
        return SearchConfig(method=self.name, **{k: self.get(k) for k in keys
                                                 if self.get(k) is not None})

    def search_params(self) -> SearchParams:
        return SearchParams.make(float(self.get("temperature", 1.0)),
                                 float(self.get("ess_threshold", 1.0)))


def make_spec(entry: dict) -> MethodSpec:
    """Validates one ``methods`` entry (a dict with ``name`` and parameters)."""
    entry = dict(entry)
    if "name" not in entry:
        raise ConfigError(f"each entry of `methods` needs a name, got {entry!r}")
    name = entry.pop("name")
    if name not in ALL_METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {list(ALL_METHODS)}")
    label = str(entry.pop("label", name))
    extra = set(entry) - _PARAMS[name]
    if extra:
        raise ConfigError(f"method {name!r} does not take {sorted(extra)}; it takes "
                          f"{sorted(_PARAMS[name]) or 'no parameters'}")
    if entry.get("reward", "prm") not in KINDS:
        raise ConfigError(f"method {label!r}: reward must be one of {KINDS}")
    if entry.get("aggregation", "last") not in AGGREGATIONS:
        raise ConfigError(f"method {label!r}: aggregation must be one of {AGGREGATIONS}")
    spec = MethodSpec(name=name, label=label, params=tuple(sorted(entry.items())))
    if spec.kind == "search":
        try:
            spec.search_config()
            spec.search_params()
        except ValueError as e:
            raise ConfigError(f"method {label!r}: {e}") from None
        if spec.reward == "orm":
            raise ConfigError(f"method {label!r}: step-level search needs a step reward "
                              "(prm or oracle), not an orm")
    return spec
