"""Incremental scoring of growing solutions by a Hugging Face reward model, one KV cache per row.

Step-level search (:func:`ttc.search.loop.run_search` with a text scorer, ``reward=hf``) asks
for the newest step's score of every row after every step, and replaces rows by copies of
others between steps. :class:`ScoringSession` keeps, for each row, the reward model's KV cache of
the tokens it has scored and those tokens, so that a call runs only what is new:

1. each row's ``(question, steps)`` is laid out in the reward model's format and tokenized
   whole (the same text and tokens as :meth:`ttc.hub.reward.HubReward.score`);
2. the tokens it shares with what the row's cache holds (the longest common prefix) are kept,
   the rest run from the first difference (a step's text normally extends the previous text; a
   token merged across the boundary, or a changed template tail such as a chat's closing
   turn, rewinds to where the tokens differ: full re-scoring when nothing is shared);
3. the newest step's score is read at its marker (or the last token for an ORM).

A new session prefills each problem's shared prefix (the text before the first step) once and
tiles it to the problem's rows. :meth:`ScoringSession.gather` applies a selection to every row's
cache and tokens. ``commit=False`` scores without keeping the new tokens (lookahead rollouts).
Stale slots past a row's tokens are never read (slot ``j`` holds position ``j``; the causal
mask hides every slot after a query).

FLOPs (:class:`ttc.hub.reward.RewardFlops`): useful counts each row's new tokens once at their
own context and the head once per score; executed counts every slot of the padded batch (rows
rounded up to a power of two, width to a multiple of 16) at the session cache's full length.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Int

from ttc import flops as ledger
from ttc.hub.reward import (
    _WIDTH,
    HubReward,
    RewardFlops,
    _bucket,
    _common,
    _HeadSpec,
    _probabilities,
    _programs,
    _read_positions,
    _round_up,
    _strip,
    pack_chunks,
)
from ttc.models.interface import Cache

__all__ = ["ScoringSession"]

SLOT_STEP = 256
"""The session cache grows in multiples of this many slots (few compiled shapes)."""


def _extend(graphdef: nnx.GraphDef, params: nnx.State, head: Mapping[str, Array], cache: Cache,
            rows: Int[Array, " b"], tokens: Int[Array, "b W"], write_pos: Int[Array, " b"],
            read: Int[Array, " b"], *, spec: _HeadSpec, commit: bool):
    """Runs ``tokens`` of session rows ``rows`` from slot ``write_pos``; the head's probability
    at suffix position ``read``. Rows ``>= B`` are padding (read row ``B - 1``, written
    nowhere). Returns ``(probs [b], cache)``, the cache updated when ``commit``."""
    model = nnx.merge(graphdef, params)
    sub = jax.tree.map(lambda c: jnp.take(c, rows, axis=0, mode="clip"), cache)
    h, sub = model.hidden(tokens, cache=sub, write_pos=write_pos)
    picked = jnp.take_along_axis(h, read[:, None, None], axis=1).astype(jnp.float32)
    probs = _probabilities(spec, head, picked)[:, 0]
    if commit:
        cache = jax.tree.map(lambda c, s: c.at[rows].set(s, mode="drop"), cache, sub)
    return probs, cache


@functools.lru_cache(maxsize=8)
def _program(options: tuple) -> jax.stages.Wrapped:
    return jax.jit(_extend, static_argnames=("graphdef", "spec", "commit"),
                   compiler_options=dict(options) or None)


@dataclasses.dataclass(kw_only=True, eq=False)
class ScoringSession:
    """Per-row incremental scoring state of one search chunk (see the module docstring).

    Create with :meth:`start`. Rows are ``problem * num_samples + sample``.

    Attributes:
        reward: the reward model.
        questions: ``[B]`` each row's question text.
        ids: ``[B]`` the tokens each row's cache holds (slot ``j`` = token ``j``).
        prefix_len: ``[B]`` the length of each row's problem prefix in tokens.
        cache: the rows' KV cache, ``[B, H_kv, T, D_h]`` per layer.
        flops: committed calls' FLOPs (the search's reward work).
        peek_flops: ``commit=False`` calls' FLOPs (lookahead rollouts).
        rescored: scored rows that shared less than their problem's prefix with their cache
            (re-scored from an earlier token than the first step's).
    """

    reward: HubReward
    questions: list[str]
    ids: list[np.ndarray]
    prefix_len: list[int]
    cache: Cache = dataclasses.field(repr=False)
    flops: RewardFlops = dataclasses.field(default_factory=RewardFlops)
    peek_flops: RewardFlops = dataclasses.field(default_factory=RewardFlops)
    rescored: int = 0

    @classmethod
    def start(cls, reward: HubReward, questions: Sequence[str], *,
              num_samples: int) -> ScoringSession:
        """A session for ``len(questions) * num_samples`` rows, each problem's prefix (its
        format's text before the first step) prefilled once and tiled to its rows."""
        prefixes = [reward.tokenizer(cls._prefix_text(reward, q),
                                     add_special_tokens=reward.format.special_tokens)["input_ids"]
                    for q in questions]
        pad = _round_up(max(len(p) for p in prefixes), _WIDTH)
        tokens = np.zeros((len(questions), pad), np.int32)
        for i, p in enumerate(prefixes):
            tokens[i, : len(p)] = p
        prefill, _ = _programs(reward.compiler_options)
        cache = prefill(reward.graphdef, reward.params, jnp.asarray(tokens))
        slots = _round_up(pad + SLOT_STEP, SLOT_STEP)
        rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
        cache = jax.tree.map(lambda c: rep(jnp.pad(c, ((0, 0), (0, 0), (0, slots - pad),
                                                       (0, 0)))), cache)
        s = cls(reward=reward, questions=[q for q in questions for _ in range(num_samples)],
                ids=[np.asarray(p, np.int64) for p in prefixes for _ in range(num_samples)],
                prefix_len=[len(p) for p in prefixes for _ in range(num_samples)], cache=cache)
        s.flops.useful += sum(float(ledger.prefill_useful(reward.cost, len(p)))
                              for p in prefixes)
        s.flops.executed += len(prefixes) * ledger.prefill_executed(reward.cost, pad, pad)
        return s

    @staticmethod
    def _prefix_text(reward: HubReward, question: str) -> str:
        text, start, _ = _strip(reward._render(question, ["x"]), reward.format.marker)
        return text[:start]

    @property
    def slots(self) -> int:
        """The session cache's length in slots."""
        return int(jax.tree.leaves(self.cache)[0].shape[2])

    def score(self, rows: Sequence[int], steps: Sequence[Sequence[str]], *,
              commit: bool = True) -> np.ndarray:
        """The newest step's score of each row in ``rows`` whose solution is now ``steps``.

        Args:
            rows: session rows (distinct).
            steps: per row, its solution's step strings (at least one; no delimiters).
            commit: keep the new tokens in the rows' caches (``False``: score only).

        Returns:
            float64 ``[len(rows)]`` probabilities that the newest step is correct (ORM: that
            the solution is).
        """
        if not rows:
            return np.zeros(0)
        fmt = self.reward.format
        laid = [_strip(self.reward._render(self.questions[r], list(s)), fmt.marker)
                for r, s in zip(rows, steps, strict=True)]
        enc = self.reward.tokenizer([t for t, _, _ in laid], return_offsets_mapping=True,
                                    add_special_tokens=fmt.special_tokens)
        jobs = []
        for j, (r, (_, _, marks)) in enumerate(zip(rows, laid, strict=True)):
            ids = np.asarray(enc["input_ids"][j], np.int64)
            read = int(_read_positions(ids, enc["offset_mapping"][j], marks,
                                       self.reward.marker_id, fmt.read_offset, fmt.marker)[-1])
            start = min(_common(ids, self.ids[r]), read)  # the read position must be computed
            jobs.append((r, ids, read, start))
        out = np.zeros(len(rows))
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]) - jobs[j][3])
        rw = self.reward
        for group in pack_chunks([len(jobs[j][1]) - jobs[j][3] for j in order],
                                 rows=rw.chunk_rows, tokens=rw.chunk_tokens):
            chunk = [order[i] for i in group]
            out[chunk] = self._run([jobs[j] for j in chunk], commit=commit)
        return out

    def gather(self, idx: np.ndarray) -> None:
        """Row ``b`` becomes a copy of row ``idx[b]`` (cache and tokens)."""
        idx = np.asarray(idx)
        if (idx == np.arange(len(idx))).all():
            return
        take = jnp.asarray(idx, jnp.int32)
        self.cache = jax.tree.map(lambda c: jnp.take(c, take, axis=0), self.cache)
        self.ids = [self.ids[i] for i in idx]
        self.questions = [self.questions[i] for i in idx]
        self.prefix_len = [self.prefix_len[i] for i in idx]

    # -- batches

    def _grow(self, need: int) -> None:
        if need <= self.slots:
            return
        extra = _round_up(need, SLOT_STEP) - self.slots
        self.cache = jax.tree.map(lambda c: jnp.pad(c, ((0, 0), (0, 0), (0, extra), (0, 0))),
                                  self.cache)

    def _run(self, jobs: list, *, commit: bool) -> np.ndarray:
        """One batched call over ``jobs`` ``(row, ids, read, start)``; charges its FLOPs."""
        rw, n_rows = self.reward, len(self.ids)
        b = _bucket(len(jobs), rw.chunk_rows)
        width = _round_up(max(len(ids) - start for _, ids, _, start in jobs), _WIDTH)
        self._grow(max(start for *_, start in jobs) + width)
        tokens = np.zeros((b, width), np.int32)
        rows = np.full(b, n_rows, np.int32)  # padding rows: out of range, written nowhere
        write_pos, read = np.zeros(b, np.int32), np.zeros(b, np.int32)
        flops = self.flops if commit else self.peek_flops
        for i, (r, ids, at, start) in enumerate(jobs):
            tokens[i, : len(ids) - start] = ids[start:]
            rows[i], write_pos[i], read[i] = r, start, at - start
            flops.useful += rw.cost.suffix(start, len(ids)) + rw.cost.heads(1)
            flops.rows += 1
            if start < self.prefix_len[r]:
                flops.full_rows += 1
                self.rescored += 1
        flops.executed += b * width * rw.cost.flops_per_token(self.slots) + rw.cost.heads(b)
        probs, cache = _program(rw.compiler_options)(
            rw.graphdef, rw.params, rw.head, self.cache, jnp.asarray(rows), jnp.asarray(tokens),
            jnp.asarray(write_pos), jnp.asarray(read), spec=rw.spec, commit=commit)
        if commit:
            self.cache = cache
            for r, ids, _, _ in jobs:
                self.ids[r] = ids
        return np.asarray(probs, np.float64)[: len(jobs)]
