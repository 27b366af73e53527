"""The method registry: every test-time-compute method of the main job, declared once.

A :class:`Method` gives a method's name, how it is evaluated (:attr:`Method.kind`), what it needs
from a verifier, the paper it follows and its parameters, each a :class:`ParamSpec` (type,
default, allowed range or choices, meaning). Validation of a method grid
(:func:`ttc.methods.make_spec`), the search loop's method list (:mod:`ttc.search.loop`), the
pool estimators (:mod:`ttc.search.pool`), the claims (:mod:`ttc.claims`) and the benchmark
(``scripts/bench.py``) all read :data:`METHODS`.

Kinds:

* ``pool``: one pool of ``max(budgets)`` complete solutions per problem, evaluated at every
  budget with unbiased subset estimators (:mod:`ttc.search.pool`);
* ``search``: one step-level search run per search budget (:mod:`ttc.search.loop`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator

import numpy as np

from ttc.errors import ConfigError
from ttc.rewards import AGGREGATIONS, KINDS
from ttc.search.resampling import SCHEMES

KIND_POOL = "pool"
KIND_SEARCH = "search"
FINALS = ("weighted_majority", "argmax")
"""Final picks of a search: reward-weighted majority vote, or the argmax of the score."""

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One parameter of a method and its allowed values.

    Attributes:
        name: the key in a ``methods`` entry.
        type: ``bool``, ``int``, ``float`` or ``str``. An ``int`` value is accepted for a
            ``float`` parameter; a ``bool`` is accepted only for a ``bool`` parameter.
        default: the value used when the entry omits the parameter.
        doc: what the parameter means (one line, shown in error messages).
        choices: the allowed values of a ``str`` parameter.
        low: smallest allowed value of a number (``None``: unbounded).
        high: largest allowed value of a number (``None``: unbounded).
        low_open: ``low`` itself is excluded.
    """

    name: str
    type: type
    default: object
    doc: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise TypeError(f"parameter {self.name}: unsupported type {self.type!r}")
        if self.validate(self.default) is not None:
            raise ValueError(f"parameter {self.name}: default {self.default!r} is not allowed")

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``'a number in [0, 1]'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = _TYPE_NAMES[self.type]
        if self.low is None and self.high is None:
            return what if self.type is not float else f"{what} (finite)"
        lo = "(-inf" if self.low is None else ("(" if self.low_open else "[") + _num(self.low)
        hi = "inf)" if self.high is None else _num(self.high) + "]"
        return f"{what} in {lo}, {hi}"

    def validate(self, value: object) -> str | None:
        """``None`` if ``value`` is allowed, else why not (a short phrase)."""
        if self.type is bool:
            return None if isinstance(value, bool | np.bool_) else "not a boolean"
        if self.type is str:
            if not isinstance(value, str):
                return "not a string"
            ok = self.choices is None or value in self.choices
            return None if ok else "not one of the choices"
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            return "not an integer" if self.type is int else "not a number"
        if self.type is int and not isinstance(value, numbers.Integral):
            return "not an integer"
        if not math.isfinite(value):
            return "not finite"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "out of range"
        if self.high is not None and value > self.high:
            return "out of range"
        return None

    def check(self, label: str, value: object) -> None:
        """Raises :class:`ConfigError` naming method ``label``, this parameter, ``value`` and the
        allowed range if ``value`` is not allowed."""
        why = self.validate(value)
        if why is not None:
            raise ConfigError(f"method {label!r}: {self.name}={value!r} is {why}; {self.name} "
                              f"must be {self.allowed()} ({self.doc}).")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """One registered method.

    Attributes:
        name: the registered name (a ``methods`` entry's ``name``).
        kind: :data:`KIND_POOL` or :data:`KIND_SEARCH`.
        summary: what the method does (one line).
        paper: the publication it follows.
        params: its parameters (``label`` excepted: every method takes one).
        needs_reward: it scores samples with a verifier (the ``reward`` parameter).
        step_reward: its verifier must score every step (a PRM or the oracle, not an ORM).
        oracle: it reads the gold answers (an upper bound, kept off the frontier).
        budget: the only budget it is evaluated at (``None``: the kind's budget grid).
    """

    name: str
    kind: str
    summary: str
    paper: str
    params: tuple[ParamSpec, ...] = ()
    needs_reward: bool = False
    step_reward: bool = False
    oracle: bool = False
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in (KIND_POOL, KIND_SEARCH):
            raise ValueError(f"method {self.name}: unknown kind {self.kind!r}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names) or "label" in names or "name" in names:
            raise ValueError(f"method {self.name}: parameter names must be unique, got {names}")
        if self.needs_reward != ("reward" in names):
            raise ValueError(f"method {self.name}: needs_reward must match a `reward` parameter")

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameters it takes, in declaration order."""
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> ParamSpec:
        """The parameter ``name`` (``KeyError`` if it takes no such parameter)."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"method {self.name} takes no parameter {name!r}")

    def defaults(self) -> dict[str, object]:
        """Every parameter's default value."""
        return {p.name: p.default for p in self.params}


# ---- parameters shared by several methods -----------------------------------------------------
REWARD = ParamSpec(name="reward", type=str, default="prm", choices=KINDS,
                   doc="the verifier: learned process or outcome reward model, or the oracle")
AGGREGATION = ParamSpec(name="aggregation", type=str, default="last", choices=AGGREGATIONS,
                        doc="how a solution's step scores combine into one score")
FLIP = ParamSpec(name="flip", type=float, default=0.0, low=0.0, high=1.0,
                 doc="oracle only: probability that a step verdict is flipped")
NOISE = ParamSpec(name="noise", type=float, default=0.0, low=0.0, high=1.0,
                  doc="oracle only: std of Gaussian noise added to a step verdict")
BEAM_WIDTH = ParamSpec(name="beam_width", type=int, default=4, low=1,
                       doc="M: expansions per kept beam, or rows per DVTS subtree; min(M, N) "
                           "at search budget N")
LOOKAHEAD = ParamSpec(name="lookahead", type=int, default=1, low=0,
                      doc="k: greedy steps rolled out before a candidate step is scored")
FINAL = ParamSpec(name="final", type=str, default="weighted_majority", choices=FINALS,
                  doc="the final pick among the search's rows")
INCREMENTAL = ParamSpec(name="incremental", type=bool, default=False,
                        doc="accumulate particle log-weights between resampling events")
SCHEME = ParamSpec(name="scheme", type=str, default="systematic", choices=SCHEMES,
                   doc="the particle resampling scheme")
TEMPERATURE = ParamSpec(name="temperature", type=float, default=1.0, low=0.0, low_open=True,
                        doc="T in the particle weights softmax(logit(r) / T)")
SWEEPS = ParamSpec(name="sweeps", type=int, default=2, low=1,
                   doc="particle Gibbs: particle-filter sweeps, each of N / sweeps particles; "
                       "min(sweeps, N) at search budget N")
CHAINS = ParamSpec(name="chains", type=int, default=2, low=2,
                   doc="parallel tempering: particle filters at different temperatures, each "
                       "of N / chains particles; min(chains, N) at search budget N")
LADDER = ParamSpec(name="ladder", type=float, default=2.0, low=1.0, low_open=True,
                   doc="parallel tempering: chain c weighs by temperature T * ladder**c")
BALANCE_TEMPERATURE = ParamSpec(
    name="balance_temperature", type=float, default=0.2, low=0.0, low_open=True,
    doc="T_b in REBASE's child allocation softmax(r / T_b) (lower: more to the best nodes)")
ESS_THRESHOLD = ParamSpec(name="ess_threshold", type=float, default=1.0, low=0.0, high=1.0,
                          doc="resample when ESS < ess_threshold * N; 1 resamples every step")
LENGTH_NORMALIZE = ParamSpec(name="length_normalize", type=bool, default=True,
                             doc="score a sample by its mean token log-likelihood, not the sum")

_VERIFIER = (REWARD, AGGREGATION, FLIP, NOISE)
SNELL = ("Snell et al. 2024, Scaling LLM Test-Time Compute Optimally can be More Effective than "
         "Scaling Model Parameters")
PURI = ("Puri et al. 2025, A Probabilistic Inference Approach to Inference-Time Scaling of LLMs "
        "using Particle-Based Monte Carlo Methods")

_DECLARED = (
    Method(name="single", kind=KIND_POOL, budget=1, summary="one sample (pass@1 of the pool)",
           paper="-"),
    Method(name="majority", kind=KIND_POOL,
           summary="majority vote over N samples (self-consistency)",
           paper="Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning in "
                 "Language Models"),
    Method(name="bon_loglik", kind=KIND_POOL, params=(LENGTH_NORMALIZE,),
           summary="best-of-N by the policy's own log-likelihood",
           paper="Wang et al. 2025, Think Deep, Think Fast: Investigating Efficiency of "
                 "Verifier-free Inference-time-scaling Methods"),
    Method(name="coverage", kind=KIND_POOL, oracle=True,
           summary="pass@N: some sample is correct (an oracle upper bound)",
           paper="Brown et al. 2024, Large Language Monkeys"),
    Method(name="bon", kind=KIND_POOL, params=_VERIFIER, needs_reward=True,
           summary="best-of-N by the verifier's score", paper=SNELL),
    Method(name="weighted_majority", kind=KIND_POOL, params=_VERIFIER, needs_reward=True,
           summary="vote weighted by the verifier's score", paper=SNELL),
    Method(name="beam", kind=KIND_SEARCH, params=(*_VERIFIER, BEAM_WIDTH, FINAL),
           needs_reward=True, step_reward=True,
           summary="PRM beam search: keep the top N/M rows, expand each M times", paper=SNELL),
    Method(name="dvts", kind=KIND_SEARCH, params=(*_VERIFIER, BEAM_WIDTH, FINAL),
           needs_reward=True, step_reward=True,
           summary="diverse verifier tree search: N/M subtrees of M rows, each keeps its best",
           paper="Beeching, Tunstall & Rush 2024, Scaling test-time compute (Hugging Face)"),
    Method(name="lookahead", kind=KIND_SEARCH, params=(*_VERIFIER, BEAM_WIDTH, LOOKAHEAD, FINAL),
           needs_reward=True, step_reward=True,
           summary="beam search scoring each step after a k-step greedy rollout", paper=SNELL),
    Method(name="particle", kind=KIND_SEARCH,
           params=(*_VERIFIER, FINAL, INCREMENTAL, SCHEME, TEMPERATURE, ESS_THRESHOLD),
           needs_reward=True, step_reward=True,
           summary="particle filtering with weights softmax(logit(r_t) / T)", paper=PURI),
    Method(name="pgibbs", kind=KIND_SEARCH,
           params=(*_VERIFIER, FINAL, INCREMENTAL, SCHEME, TEMPERATURE, ESS_THRESHOLD, SWEEPS),
           needs_reward=True, step_reward=True,
           summary="particle Gibbs: particle-filter sweeps, each after the first keeping a "
                   "reference trajectory drawn from the previous sweep; answer from all sweeps",
           paper=PURI),
    Method(name="tempering", kind=KIND_SEARCH,
           params=(*_VERIFIER, FINAL, INCREMENTAL, SCHEME, TEMPERATURE, ESS_THRESHOLD, CHAINS,
                   LADDER),
           needs_reward=True, step_reward=True,
           summary="parallel tempering: particle filters at temperatures T * ladder**c with "
                   "Metropolis swaps between neighbours; answer from the temperature-T chain",
           paper=PURI),
    Method(name="rebase", kind=KIND_SEARCH, params=(*_VERIFIER, BALANCE_TEMPERATURE, FINAL),
           needs_reward=True, step_reward=True,
           summary="reward-balanced search: finished leaves kept, the rest of the width "
                   "given to nodes in proportion to softmax(r / T_b)",
           paper="Wu et al. 2024, Inference Scaling Laws: An Empirical Analysis of "
                 "Compute-Optimal Inference for Problem-Solving with Language Models"),
)


def _index(declared: tuple[Method, ...]) -> dict[str, Method]:
    out: dict[str, Method] = {}
    for m in declared:
        if m.name in out:
            raise ValueError(f"method {m.name!r} is declared twice")
        out[m.name] = m
    return out


METHODS: dict[str, Method] = _index(_DECLARED)
"""Every registered method by name, in declaration order (pool methods first)."""


def get(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ConfigError: no method of that name is registered.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {list(METHODS)}")
    return METHODS[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered method names (of ``kind`` only, if given), in declaration order."""
    return tuple(m.name for m in iter_methods(kind))


def iter_methods(kind: str | None = None) -> Iterator[Method]:
    """Registered methods (of ``kind`` only, if given), in declaration order."""
    return (m for m in METHODS.values() if kind is None or m.kind == kind)


def is_search(name: str) -> bool:
    """Whether ``name`` is a registered step-level search method (``False`` if unknown)."""
    return name in METHODS and METHODS[name].kind == KIND_SEARCH
