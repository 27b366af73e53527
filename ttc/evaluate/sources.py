"""Verifiers of an evaluation: the reward sources, scoring a pool with them, and the memo that
scores each pool once per verifier."""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttc import rewards as R
from ttc.decode import TRACE_COUNTS, Samples
from ttc.errors import ConfigError
from ttc.methods import MethodSpec
from ttc.models.interface import PolicyConfig
from ttc.parallel import device_groups, over_rows, resolve_devices
from ttc.tasks.base import ProblemSet, Task


@dataclasses.dataclass(frozen=True)
class RewardSource:
    """A reward source ready for scoring: static spec, params, and its model config (FLOPs)."""

    spec: R.RewardSpec
    params: object
    cfg: PolicyConfig | None
    meta: dict = dataclasses.field(default_factory=dict)


VerifierKey = tuple[str, float, float]
"""``(reward kind, flip, noise)``: methods with equal keys share one verifier's scores."""


def reward_key(m: MethodSpec) -> VerifierKey:
    """The verifier a method with a ``reward`` parameter scores with."""
    return (m.reward, float(m.value("flip")), float(m.value("noise")))


class Verifiers:
    """The learned reward sources of an evaluation (``prm``/``orm``) plus the oracle, built on
    demand from a method's ``flip``/``noise``."""

    def __init__(self, task: Task, learned: dict[str, RewardSource] | None):
        self.task = task
        self.learned = dict(learned or {})

    def check(self, methods: list[MethodSpec]) -> None:
        """Raises :class:`ConfigError` if a method needs a learned model that is missing."""
        for m in methods:
            if m.reward in ("prm", "orm") and m.reward not in self.learned:
                raise ConfigError(f"method {m.label!r} needs a {m.reward} reward model")

    def source(self, m: MethodSpec) -> RewardSource:
        """The reward source ``m`` scores with."""
        kind, flip, noise = reward_key(m)
        if kind == "oracle":
            return RewardSource(spec=R.RewardSpec(kind="oracle", window=self.task.max_step_len,
                                                  flip=flip, noise=noise), params=None, cfg=None)
        return self.learned[kind]

    def meta(self, m: MethodSpec) -> dict:
        """The metadata of ``m``'s learned reward model (empty for the oracle or none)."""
        return self.learned[m.reward].meta if m.reward in self.learned else {}


@functools.partial(jax.jit, static_argnames=("spec", "task", "devices"))
def _score_pool(params, tokens, prompt_len, length, gold, keys, *, spec, task, devices):
    """Scores one chunk of solutions per device (``keys``: ``[devices]``, one per chunk)."""
    TRACE_COUNTS["score_pool"] += 1

    def local(params, tokens, prompt_len, length, gold, keys):
        return R.score_solutions(spec, params, task, tokens, prompt_len, length, gold, keys[0])

    split = {"tokens", "prompt_len", "length", "gold", "keys"}
    return over_rows(local, devices, split=split)(params, tokens, prompt_len, length, gold, keys)


def score_pool(src: RewardSource, task: Task, samples: Samples, problems: ProblemSet, seed: int,
               chunk: int = 2048, devices: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step scores ``[P, N, K]`` and mask of every pooled solution (fixed-size chunks, each with
    its own key; ``devices`` of them side by side, see :mod:`ttc.parallel`: the scores do not
    depend on the device count)."""
    p, n, t = samples.tokens.shape
    tokens = samples.tokens.reshape(p * n, t)
    plen = np.repeat(problems.prompt_len, n)
    gold = np.repeat(problems.gold, n, axis=0)
    length = samples.length.reshape(-1)
    key = jax.random.key(10_000 + seed)
    chunks = []
    for i in range(0, p * n, chunk):
        idx = np.arange(i, i + chunk)
        key, sub = jax.random.split(key)
        chunks.append((np.where(idx < p * n, idx, i), sub, min(chunk, p * n - i)))
    d = min(resolve_devices(devices), len(chunks))
    outs, masks = [], []
    for group, padded in device_groups(chunks, d):
        idx = np.concatenate([c[0] for c in padded])
        sc, mk = _score_pool(src.params, jnp.asarray(tokens[idx]), jnp.asarray(plen[idx]),
                             jnp.asarray(length[idx]), jnp.asarray(gold[idx]),
                             jnp.stack([c[1] for c in padded]), spec=src.spec, task=task,
                             devices=d)
        sc, mk = np.asarray(sc), np.asarray(mk)
        for j, (_, _, keep) in enumerate(group):
            outs.append(sc[j * chunk:j * chunk + keep])
            masks.append(mk[j * chunk:j * chunk + keep])
    k = outs[0].shape[1]
    return np.concatenate(outs).reshape(p, n, k), np.concatenate(masks).reshape(p, n, k)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolScores:
    """One verifier's step scores of every pooled solution.

    Attributes:
        steps: ``[P, N, K]`` step scores.
        mask: ``[P, N, K]`` which of them are real steps.
        seconds: wall time the scoring took.
    """

    steps: np.ndarray
    mask: np.ndarray
    seconds: float

    def aggregated(self, how: str) -> np.ndarray:
        """``[P, N]`` one score per solution (:func:`ttc.rewards.aggregate`)."""
        k = self.steps.shape[-1]
        return np.asarray(R.aggregate(jnp.asarray(self.steps.reshape(-1, k)),
                                      jnp.asarray(self.mask.reshape(-1, k)),
                                      how)).reshape(self.steps.shape[:2])


class ScoreMemo:
    """The scores of one pool (one seed) by each verifier, computed on first use."""

    def __init__(self, task: Task, samples: Samples, problems: ProblemSet, seed: int):
        self.task, self.samples, self.problems, self.seed = task, samples, problems, seed
        self._done: dict[VerifierKey, PoolScores] = {}

    def get(self, key: VerifierKey, src: RewardSource) -> PoolScores:
        """The pool's scores by ``src`` (the verifier ``key``), scoring it the first time."""
        if key not in self._done:
            t0 = time.time()
            steps, mask = score_pool(src, self.task, self.samples, self.problems, self.seed)
            self._done[key] = PoolScores(steps=steps, mask=mask, seconds=time.time() - t0)
        return self._done[key]
