"""Validated entries of a method grid: :func:`make_spec` turns one ``methods`` entry into a
:class:`MethodSpec`, :func:`check_budgets` checks it against the search budgets.

A ``methods`` entry is a dict with the registered ``name`` of a method (:mod:`ttc.registry`), an
optional ``label`` (the name shown in records and plots; default: the name) and any of the
method's parameters (:attr:`ttc.registry.Method.params`; omitted ones take their defaults).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ttc import registry as REG
from ttc.errors import ConfigError
from ttc.search.loop import SearchConfig, SearchParams

_SEARCH_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(SearchConfig) if f.name != "method")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One method of the grid.

    Attributes:
        name: the registered method name.
        label: the name shown in records and plots.
        params: the parameters the entry gives, sorted by name (defaults not filled in).
    """

    name: str
    label: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def method(self) -> REG.Method:
        """The registry entry of :attr:`name`."""
        return REG.get(self.name)

    def get(self, k: str, default: object = None) -> object:
        """The value the entry gives for ``k``, else ``default``."""
        return dict(self.params).get(k, default)

    def value(self, k: str) -> object:
        """The entry's value for parameter ``k``, else the registry default (``KeyError`` if the
        method takes no such parameter)."""
        return dict(self.params).get(k, self.method.param(k).default)

    @property
    def kind(self) -> str:
        """``pool`` or ``search`` (:mod:`ttc.registry`)."""
        return self.method.kind

    @property
    def reward(self) -> str | None:
        """The verifier kind (``prm|orm|oracle``), ``None`` for a verifier-free method."""
        return str(self.value("reward")) if self.method.needs_reward else None

    @property
    def oracle(self) -> bool:
        """Whether the method reads the gold answers (an upper bound)."""
        return self.method.oracle

    def budgets(self, pool_budgets: Sequence[int],
                search_budgets: Sequence[int]) -> tuple[int, ...]:
        """The budgets this method is evaluated at, given the grid's two budget lists."""
        if self.method.budget is not None:
            return (self.method.budget,)
        grid = search_budgets if self.kind == REG.KIND_SEARCH else pool_budgets
        return tuple(int(b) for b in grid)

    def search_config(self) -> SearchConfig:
        """The static configuration of a search method."""
        taken = self.method.param_names
        return SearchConfig(method=self.name, **{k: self.value(k) for k in _SEARCH_CONFIG_KEYS
                                                 if k in taken})

    def search_params(self) -> SearchParams:
        """The traced knobs of a search method (registry defaults where it takes none)."""
        return SearchParams.make(temperature=self._knob(REG.TEMPERATURE),
                                 ess_threshold=self._knob(REG.ESS_THRESHOLD),
                                 balance_temperature=self._knob(REG.BALANCE_TEMPERATURE),
                                 ladder=self._knob(REG.LADDER))

    def _knob(self, p: REG.ParamSpec) -> float:
        return float(self.value(p.name) if p.name in self.method.param_names else p.default)


def make_spec(entry: dict) -> MethodSpec:
    """Validates one ``methods`` entry (a dict with ``name`` and parameters).

    Raises:
        ConfigError: the name is missing or not registered, a parameter is not one the method
            takes or is outside its allowed range, or parameters contradict each other.
    """
    entry = dict(entry)
    if "name" not in entry:
        raise ConfigError(f"each entry of `methods` needs a name, got {entry!r}")
    name = entry.pop("name")
    method = REG.get(name)
    label = str(entry.pop("label", name))
    extra = set(entry) - set(method.param_names)
    if extra:
        which = repr(label) if label == name else f"{label!r} ({name})"
        raise ConfigError(f"method {which} does not take {sorted(extra)}; it takes "
                          f"{sorted(method.param_names) or 'no parameters'}.")
    for k, v in entry.items():
        method.param(k).check(label, v)
    spec = MethodSpec(name=name, label=label, params=tuple(sorted(entry.items())))
    _check_verifier(spec)
    return spec


def _check_verifier(spec: MethodSpec) -> None:
    if not spec.method.needs_reward:
        return
    if spec.method.step_reward and spec.reward == "orm":
        raise ConfigError(f"method {spec.label!r}: step-level search needs a step reward "
                          "(prm or oracle), not an orm; reward='orm' is not allowed for "
                          f"{spec.name}.")
    if spec.reward != "oracle":
        given = [f"{k}={spec.get(k)!r}" for k in ("flip", "noise") if spec.get(k, 0.0) != 0.0]
        if given:
            raise ConfigError(f"method {spec.label!r}: {', '.join(given)} with "
                              f"reward={spec.reward!r}; flip and noise perturb the oracle "
                              "verifier only (reward: oracle, values in [0, 1]): set reward: "
                              "oracle or drop them.")


def check_budgets(spec: MethodSpec, search_budgets: Sequence[int]) -> None:
    """Checks a search method's ``beam_width`` (and particle Gibbs' ``sweeps``) against every
    search budget.

    Beam search, DVTS and lookahead search run ``N / M`` beams (or subtrees) of ``M =
    min(beam_width, N)`` rows at budget ``N``: a budget below ``beam_width`` runs with
    ``M = N``, and a budget of at least ``beam_width`` must be a multiple of it. Particle Gibbs
    and parallel tempering take ``min(sweeps, N)`` sweeps and ``min(chains, N)`` chains, which
    must divide ``N``. Pool methods, particle filtering and REBASE take any budget.

    Raises:
        ConfigError: a search budget is not a positive integer, or is not a multiple of the
            method's ``beam_width`` (and not below it) or of its ``sweeps``.
    """
    for n in search_budgets:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"search_budgets must be positive integers, got "
                              f"{list(search_budgets)} ({n!r} is not)")
    for key, what in (("sweeps", "particle Gibbs runs N / sweeps particles per sweep"),
                      ("chains", "parallel tempering runs N / chains particles per chain")):
        if spec.kind != REG.KIND_SEARCH or key not in spec.method.param_names:
            continue
        k = int(spec.value(key))
        bad = [n for n in search_budgets if n % min(k, n)]
        if bad:
            raise ConfigError(f"method {spec.label!r}: {key}={k} does not divide search "
                              f"budget(s) {bad} (search_budgets={list(search_budgets)}); {what}, "
                              f"so every search budget N must be a multiple of {key}, or smaller "
                              f"than it (then {key}=N).")
    if spec.kind != REG.KIND_SEARCH or "beam_width" not in spec.method.param_names:
        return
    m = int(spec.value("beam_width"))
    bad = [n for n in search_budgets if n % min(m, n)]
    if bad:
        raise ConfigError(f"method {spec.label!r}: beam_width={m} does not divide search "
                          f"budget(s) {bad} (search_budgets={list(search_budgets)}); every "
                          "search budget N must be a multiple of beam_width, or smaller than "
                          "it (then M=N).")
