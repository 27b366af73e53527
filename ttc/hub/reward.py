"""Hugging Face reward models as ttc reward models: process (PRM) and outcome (ORM) scorers.

:func:`load_reward` reads a Hugging Face model directory (``config.json``, safetensors,
tokenizer) in one of four :data:`FORMATS`, each stating how text is laid out, where scores are
read and how a score is computed:

* ``math_shepherd`` (Wang et al. 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step
  without Human Annotations"; ``peiyi9979/math-shepherd-mistral-7b-prm``): a causal LM over the
  plain text ``f"{question} {step_1} ки\\n{step_2} ки..."`` (the model card's layout;
  search-and-learn's wrapper also prepends a system prompt and joins steps by ``"\\n\\n"``). The
  score of step ``i`` is ``softmax(logits[+], logits[-])[+]`` at the ``i``-th tag token.
* ``rlhflow`` (Xiong et al. 2024, "An Implementation of Generative PRM";
  ``RLHFlow/Llama3.1-8B-PRM-Deepseek-Data``): a causal LM over a chat: user
  ``question + " " + step_1``, assistant ``"+"``, user ``step_2``, assistant ``"+"``, ... The
  score of step ``i`` is ``softmax(logits[+], logits[-])[+]`` at the position that predicts the
  ``i``-th assistant ``"+"`` (search-and-learn's ``RLHFFlow`` wrapper).
* ``qwen_prm`` (Zhang et al. 2025, "The Lessons of Developing Process Reward Models in
  Mathematical Reasoning"; ``Qwen/Qwen2.5-Math-PRM-7B``, ``Qwen2ForProcessRewardModel``): a
  Qwen2 trunk and the head ``score = Linear(D, D) -> ReLU -> Linear(D, 2)`` over a chat with the
  system prompt :data:`QWEN_PRM_SYSTEM`, user ``question`` and assistant
  ``"<extra_0>".join(steps) + "<extra_0>"``; the score of step ``i`` is ``softmax(head)[1]`` at
  the ``i``-th ``<extra_0>`` token.
* ``orm`` (``*ForSequenceClassification``, e.g. ``LlamaForSequenceClassification``): the head
  ``score = Linear(D, num_labels)`` (no bias) read at the last token of a chat with user
  ``question`` and assistant ``"\\n\\n".join(steps)``; ``num_labels`` 1: ``sigmoid``, 2:
  ``softmax[1]``. One score per solution (the caller reports it as the final step's).

The trunk is a :class:`~ttc.models.llama.Llama` loaded through :mod:`ttc.hub.hf` (shape-only
build, memory-mapped tensors, one copy of the weights) without its LM head; the reward head is
held beside it as a few float32 arrays (for the causal formats only the ``+``/``-`` rows of the
LM head: two logits instead of the vocabulary).

Scoring (:meth:`HubReward.score`) is host-driven and shares work (search spends most of its
FLOPs here): per problem, the tokens before the first solution-dependent character (the shared
prefix) are prefilled once into a KV cache; each solution's remaining tokens (its suffix) run
against that cache, batched across solutions in length-sorted chunks whose width is a multiple
of 16 and whose cache holds ``prefix_pad + width`` slots. A solution whose full tokenization
does not start with the prefix tokens (a token merged across the boundary) is re-scored whole
in the same chunks. FLOPs are counted with :mod:`ttc.flops` (:class:`RewardFlops`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from ttc import flops as ledger
from ttc.errors import ConfigError
from ttc.hub import names
from ttc.hub.hf import ARCHITECTURES, _checkpoint_tensors, config_from_hf, load_hf_tensors
from ttc.models.interface import Cache, ledger_flops_per_token
from ttc.models.llama import LlamaConfig

__all__ = ["FORMATS", "QWEN_PRM_SYSTEM", "HubReward", "RewardFlops", "RewardFormat",
           "load_reward"]

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt Qwen2.5-Math-PRM was trained with."""

_START, _MARK = "\ue000", "\ue001"  # private-use sentinels: prefix end, score marker
_SENTINELS = re.compile(f"([{_START}{_MARK}])")
_WIDTH = 16  # suffix and prefix widths are multiples of this (few compiled shapes)
_READS = 8  # read slots per row are a multiple of this


# --------------------------------------------------------------------------- formats


def _math_shepherd(question: str, steps: Sequence[str]) -> str:
    return question + _START + " " + "\n".join(f"{s} {_MARK}" for s in steps)


def _rlhflow(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    turns = [question + _START + " " + steps[0], *steps[1:]] if steps else [question + _START]
    return [m for t in turns for m in ({"role": "user", "content": t},
                                        {"role": "assistant", "content": _MARK})]


def _qwen_prm(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    return [{"role": "system", "content": QWEN_PRM_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": _START + "".join(s + _MARK for s in steps)}]


def _orm(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": _START + "\n\n".join(steps)}]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardFormat:
    """How one family of reward checkpoints is laid out, read and scored.

    Attributes:
        name: the format's name (``load_reward(format=...)``).
        head: ``'lm_pair'`` (causal LM: softmax over the good/bad token logits, probability of
            good), ``'process'`` (Linear-ReLU-Linear to 2 labels, probability of label 1) or
            ``'classifier'`` (Linear to 1 or 2 labels: sigmoid or probability of label 1); the
            kinds of :data:`ttc.hub.names.REWARD_HEADS`.
        architecture: the ``config.json`` architecture suffix the checkpoint must have
            (``'ForCausalLM'``, ``'ForProcessRewardModel'``, ``'ForSequenceClassification'``).
        layout: ``(question, steps) -> text`` or chat messages, with a sentinel character
            where the solution-dependent text starts and one for each score marker.
        chat: the layout gives chat messages, rendered by the tokenizer's chat template.
        marker: the string each ``_MARK`` stands for, which must be one token (``None``: the
            score is read at the last token).
        read_offset: scores are read at the marker token plus this (``-1``: the position that
            predicts it).
        good: the good token of an ``'lm_pair'`` head (one token).
        bad: its bad token.
        special_tokens: the plain text is tokenized with the tokenizer's special tokens (BOS);
            chat text already has them from the template.
        paper: where the format comes from.
    """

    name: str
    head: str
    architecture: str
    layout: Callable[[str, Sequence[str]], str | list[dict[str, str]]]
    chat: bool
    marker: str | None
    read_offset: int = 0
    good: str | None = None
    bad: str | None = None
    special_tokens: bool = False
    paper: str = ""


FORMATS: tuple[RewardFormat, ...] = (
    RewardFormat(name="math_shepherd", head="lm_pair", architecture="ForCausalLM",
                 layout=_math_shepherd, chat=False, marker="ки", good="+", bad="-",
                 special_tokens=True, paper="Wang et al. 2024, Math-Shepherd"),
    RewardFormat(name="rlhflow", head="lm_pair", architecture="ForCausalLM", layout=_rlhflow,
                 chat=True, marker="+", read_offset=-1, good="+", bad="-",
                 paper="Xiong et al. 2024, RLHFlow PRM"),
    RewardFormat(name="qwen_prm", head="process", architecture="ForProcessRewardModel",
                 layout=_qwen_prm, chat=True, marker="<extra_0>",
                 paper="Zhang et al. 2025, The Lessons of Developing PRMs"),
    RewardFormat(name="orm", head="classifier", architecture="ForSequenceClassification",
                 layout=_orm, chat=True, marker=None,
                 paper="outcome reward model (sequence classifier)"),
)
"""The supported reward-checkpoint formats (module docstring)."""

_BY_NAME = {f.name: f for f in FORMATS}


def _format(name: str) -> RewardFormat:
    if name not in _BY_NAME:
        raise ConfigError(
            f"unknown reward format {name!r}: ttc.hub.reward reads {', '.join(_BY_NAME)} "
            "(math_shepherd: a causal-LM PRM scored at 'ки' tags; rlhflow: a causal-LM PRM "
            "scored at assistant '+' turns; qwen_prm: Qwen2ForProcessRewardModel scored at "
            "'<extra_0>'; orm: a *ForSequenceClassification model scored at the last token).")
    return _BY_NAME[name]


# --------------------------------------------------------------------------- FLOPs


@dataclasses.dataclass(kw_only=True)
class RewardFlops:
    """FLOPs of the scoring calls so far (analytic, :mod:`ttc.flops` formulas).

    Attributes:
        useful: every real token once at its own context length (each problem's shared prefix
            once, each solution's remaining tokens after it), plus the head at each score.
        executed: what the padded batches computed: every slot of every row (padding rows
            included), attending over the whole cache of its call, plus the head at every
            read slot.
        rows: solutions scored.
        full_rows: of them, re-scored whole (no shared prefix: ``share_prefix=False`` or a
            tokenization that does not start with the prefix tokens).
    """

    useful: float = 0.0
    executed: float = 0.0
    rows: int = 0
    full_rows: int = 0

    @property
    def ratio(self) -> float:
        """``useful / executed`` (1 before any call)."""
        return self.useful / self.executed if self.executed else 1.0

    def reset(self) -> None:
        """Zeroes every counter."""
        self.useful, self.executed, self.rows, self.full_rows = 0.0, 0.0, 0, 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Cost:
    """The ledger view of a reward model: trunk matmuls (no LM head) and head matmuls."""

    matmul_params: int
    n_layers: int
    d_attn: int
    head_params: int
    windows: tuple[int | None, ...] = ()  # per layer: a sliding window or None

    def flops_per_token(self, context: int | float) -> float:
        """As the policy config's: a sliding-window layer is charged at most its window."""
        return ledger_flops_per_token(self.matmul_params, self.n_layers, self.d_attn, context,
                                      self.windows)

    def suffix(self, start: int, end: int) -> float:
        """Tokens ``start .. end - 1`` each attending to its own ``position + 1`` slots (fewer
        in sliding-window layers: :func:`ttc.flops.context_sum`)."""
        n = end - start
        return float(ledger.forward_flops(self, n, ledger.context_sum(self, start, n)))

    def heads(self, reads: int) -> float:
        return 2.0 * self.head_params * reads


# --------------------------------------------------------------------------- jitted programs


@dataclasses.dataclass(frozen=True, kw_only=True)
class _HeadSpec:
    """The static part of a head: its kind, label count and final-logit soft-cap."""

    kind: str
    labels: int = 2
    softcap: float | None = None


def _matmul(x: Array, w: Array) -> Array:
    return jnp.matmul(x, w, precision=jax.lax.Precision.HIGHEST)


def _probabilities(spec: _HeadSpec, head: Mapping[str, Array],
                   h: Float[Array, "B K D"]) -> Float[Array, "B K"]:
    """Score probabilities of hidden states ``h`` (float32) under the head."""
    if spec.kind == "lm_pair":
        z = _matmul(h, head["w"])
        if spec.softcap is not None:
            z = spec.softcap * jnp.tanh(z / spec.softcap)
        return jax.nn.softmax(z, axis=-1)[..., 0]
    if spec.kind == "process":
        z = _matmul(jax.nn.relu(_matmul(h, head["w1"]) + head["b1"]), head["w2"]) + head["b2"]
        return jax.nn.softmax(z, axis=-1)[..., 1]
    z = _matmul(h, head["w"])
    return jax.nn.sigmoid(z[..., 0]) if spec.labels == 1 else jax.nn.softmax(z, -1)[..., 1]


def _prefill(graphdef: nnx.GraphDef, params: nnx.State, tokens: Int[Array, "G L"]) -> Cache:
    """The ``[G, H_kv, L, D_h]`` cache of prefix rows ``tokens`` (each from slot 0)."""
    model = nnx.merge(graphdef, params)
    g, length = tokens.shape
    _, cache = model.hidden(tokens, cache=model.cfg.init_cache(g, length),
                            write_pos=jnp.zeros((g,), jnp.int32))
    return cache


def _chunk(graphdef: nnx.GraphDef, params: nnx.State, head: Mapping[str, Array],
           prefix: Cache, rows: Int[Array, " B"], tokens: Int[Array, "B W"],
           write_pos: Int[Array, " B"], reads: Int[Array, "B K"], *,
           spec: _HeadSpec) -> Float[Array, "B K"]:
    """Scores of suffix rows ``tokens`` written after their problem's prefix cache.

    Row ``b`` copies prefix cache row ``rows[b]`` (``[.., P, ..]`` slots, ``P`` the prefix pad)
    into a ``P + W`` cache, runs its tokens from slot ``write_pos[b]`` and returns the head's
    probabilities at its suffix positions ``reads[b]``.
    """
    model = nnx.merge(graphdef, params)
    width = tokens.shape[1]
    cache = jax.tree.map(lambda x: jnp.pad(x[rows], ((0, 0), (0, 0), (0, width), (0, 0))),
                         prefix)
    h, _ = model.hidden(tokens, cache=cache, write_pos=write_pos)
    picked = jnp.take_along_axis(h, reads[:, :, None], axis=1).astype(jnp.float32)
    return _probabilities(spec, head, picked)


@functools.lru_cache(maxsize=8)
def _programs(options: tuple[tuple[str, Any], ...]) -> tuple[Callable, Callable]:
    """The jitted prefill and chunk programs for XLA ``compiler_options`` (one per shape)."""
    opts = dict(options) or None
    return (jax.jit(_prefill, static_argnames=("graphdef",), compiler_options=opts),
            jax.jit(_chunk, static_argnames=("graphdef", "spec"), compiler_options=opts))


# --------------------------------------------------------------------------- text to rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Row:
    """One solution as tokens.

    Attributes:
        problem: its problem's index in the call.
        solution: its index among the problem's solutions.
        ids: ``[L]`` token ids of the whole formatted text.
        reads: token indices whose outputs are its scores (one per step; orm: one).
        common: how many leading tokens it shares with the problem's prefix tokens.
        start: where its computed tokens start (the prefix length, or 0: re-scored whole).
    """

    problem: int
    solution: int
    ids: np.ndarray
    reads: np.ndarray
    common: int
    start: int


def _strip(rendered: str, marker: str | None) -> tuple[str, int, list[int]]:
    """The text without sentinels, the prefix's end and each marker's character offset."""
    text, start, marks, size = [], None, [], 0
    for part in _SENTINELS.split(rendered):
        if part == _START:
            start = size
            continue
        if part == _MARK:
            marks.append(size)
            part = marker or ""
        text.append(part)
        size += len(part)
    if start is None:
        raise ValueError("the chat template dropped the solution text: cannot locate it")
    return "".join(text), start, marks


def _read_positions(ids: Sequence[int], offsets: Sequence[tuple[int, int]], marks: list[int],
                    marker_id: int | None, read_offset: int, marker: str | None) -> np.ndarray:
    """Token indices of the scores: the token holding each marker character, plus the offset."""
    if marker_id is None:
        return np.asarray([len(ids) - 1])
    span = np.asarray(offsets, np.int64).reshape(-1, 2)
    ids_arr, where = np.asarray(ids), np.asarray(marks)[:, None]
    hit = (span[None, :, 0] <= where) & (span[None, :, 1] > where)
    first = hit.argmax(axis=1)
    if not hit.any(axis=1).all() or (ids_arr[first] != marker_id).any():
        raise ValueError(f"a score marker {marker!r} was not tokenized as its own token (it "
                         "merged with its neighbours): the text cannot be scored")
    return first + read_offset


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


# --------------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class HubReward:
    """A Hugging Face reward model: a Llama-family trunk, a head beside it, the tokenizer.

    Attributes:
        path: the model directory.
        format: its :class:`RewardFormat`.
        cfg: the trunk's :class:`~ttc.models.llama.LlamaConfig` (``tie_embeddings`` set: the
            trunk holds no LM head).
        graphdef: the trunk module's graph (static under jit).
        params: its parameters.
        head: the head's float32 arrays (``w`` ``[D, 2]`` good/bad rows; ``w1`` ``[D, D]``,
            ``b1``, ``w2`` ``[D, 2]``, ``b2``; or ``w`` ``[D, num_labels]``).
        spec: the head's static part.
        tokenizer: the Hugging Face tokenizer.
        marker_id: the marker's token id (``None`` for orm).
        flops: counters of every call (:class:`RewardFlops`; reset with ``flops.reset()``).
        chunk_rows: most solutions per batched suffix chunk (a power of two).
        chunk_tokens: most ``rows * width`` tokens per chunk.
        prefix_rows: most problems whose prefixes are prefilled (and held) together.
        compiler_options: XLA options of the jitted programs (tests lower optimisation).
    """

    path: Path
    format: RewardFormat
    cfg: LlamaConfig
    graphdef: nnx.GraphDef = dataclasses.field(repr=False)
    params: nnx.State = dataclasses.field(repr=False)
    head: Mapping[str, Array] = dataclasses.field(repr=False)
    spec: _HeadSpec
    tokenizer: Any = dataclasses.field(repr=False)
    marker_id: int | None
    flops: RewardFlops = dataclasses.field(default_factory=RewardFlops)
    chunk_rows: int = 16
    chunk_tokens: int = 8192
    prefix_rows: int = 8
    compiler_options: tuple[tuple[str, Any], ...] = ()

    @functools.cached_property
    def cost(self) -> _Cost:
        """The FLOP ledger's view: trunk matmuls without the LM head, the head per score."""
        d = self.cfg.d_model
        head = {"lm_pair": 2 * d, "process": d * d + 2 * d, "classifier": d * self.spec.labels}
        return _Cost(matmul_params=self.cfg.matmul_params - d * self.cfg.out_dim,
                     n_layers=self.cfg.n_layers, d_attn=self.cfg.d_attn,
                     head_params=head[self.spec.kind], windows=self.cfg.windows)

    def score(self, problems: Sequence[tuple[str, Sequence[Sequence[str]]]], *,
              share_prefix: bool = True) -> list[list[np.ndarray]]:
        """Per-step scores of solutions.

        Args:
            problems: ``(question, solutions)`` per problem, each solution a list of step
                strings (without delimiters).
            share_prefix: prefill each problem's shared prefix once (``False``: every solution
                is re-scored whole; the same scores, for checking).

        Returns:
            Per problem, per solution, a float64 ``[n_steps]`` array of probabilities in
            ``[0, 1]`` that each step is correct (orm: ``[1]``, the whole solution's).
        """
        out: list[list[np.ndarray]] = [[np.zeros(0)] * len(s) for _, s in problems]
        for first in range(0, len(problems), self.prefix_rows):
            group = range(first, min(first + self.prefix_rows, len(problems)))
            encoded = [self._encode(i, *problems[i], share_prefix) for i in group]
            self._score_group([p for p, _ in encoded], [r for _, rs in encoded for r in rs],
                              first, out)
        return out

    # -- text

    def _render(self, question: str, steps: Sequence[str]) -> str:
        if any(c in t for t in (question, *steps) for c in (_START, _MARK)):
            raise ValueError("question or step text holds the private-use characters "
                             "U+E000/U+E001 that ttc.hub.reward uses as sentinels")
        laid = self.format.layout(question, list(steps))
        if not self.format.chat:
            return laid
        return self.tokenizer.apply_chat_template(laid, tokenize=False)

    def _encode(self, problem: int, question: str, solutions: Sequence[Sequence[str]],
                share: bool) -> tuple[np.ndarray, list[_Row]]:
        """The problem's prefix tokens and its solutions' rows (one batched tokenization)."""
        if not solutions:
            return np.zeros(0, np.int64), []
        laid = [_strip(self._render(question, steps), self.format.marker) for steps in solutions]
        prefix_text = laid[0][0][: laid[0][1]]
        enc = self.tokenizer([t for t, _, _ in laid] + [prefix_text], return_offsets_mapping=True,
                             add_special_tokens=self.format.special_tokens)
        prefix = np.asarray(enc["input_ids"][-1], np.int64)
        rows = []
        for j, (text, start, marks) in enumerate(laid):
            ids = np.asarray(enc["input_ids"][j], np.int64)
            reads = _read_positions(ids, enc["offset_mapping"][j], marks, self.marker_id,
                                    self.format.read_offset, self.format.marker)
            common = _common(ids, prefix) if text[:start] == prefix_text else 0
            ok = share and common == len(prefix) > 0 and (reads >= len(prefix)).all()
            rows.append(_Row(problem=problem, solution=j, ids=ids, reads=reads, common=common,
                             start=len(prefix) if ok else 0))
        return prefix, rows

    # -- batches

    def _score_group(self, prefixes: list[np.ndarray], rows: list[_Row], first: int,
                     out: list[list[np.ndarray]]) -> None:
        """Scores the rows of problems ``first ..`` into ``out`` and charges their FLOPs."""
        rows = [r for r in rows if len(r.reads)]
        shared = sorted({r.problem for r in rows if r.start})
        cache, pad = self._prefill([prefixes[p - first] for p in shared])
        slot = {p: i for i, p in enumerate(shared)}
        self.flops.useful += sum(float(ledger.prefill_useful(self.cost, len(p)))
                                 for p in prefixes)
        rows.sort(key=lambda r: len(r.ids) - r.start)
        chunks = self._chunks(rows)
        launched = [self._run_chunk(cache, pad, c, slot) for c in chunks]  # dispatched async
        for chunk, probs in zip(chunks, launched, strict=True):
            for r, p in zip(chunk, np.asarray(probs), strict=False):
                out[r.problem][r.solution] = np.asarray(p[: len(r.reads)], np.float64)

    def _prefill(self, prefixes: list[np.ndarray]) -> tuple[Cache, int]:
        """The prefix cache of the sharing problems and its slot count (0: none)."""
        if not prefixes:
            return self.cfg.init_cache(1, 0), 0
        pad = _round_up(max(len(p) for p in prefixes), _WIDTH)
        rows = _bucket(len(prefixes), self.prefix_rows)
        tokens = np.zeros((rows, pad), np.int32)
        for i, p in enumerate(prefixes):
            tokens[i, : len(p)] = p
        prefill, _ = _programs(self.compiler_options)
        self.flops.executed += rows * ledger.prefill_executed(self.cost, pad, pad)
        return prefill(self.graphdef, self.params, jnp.asarray(tokens)), pad

    def _chunks(self, rows: list[_Row]) -> list[list[_Row]]:
        """Consecutive runs of length-sorted rows within the row and token budgets."""
        groups = pack_chunks([len(r.ids) - r.start for r in rows], rows=self.chunk_rows,
                             tokens=self.chunk_tokens)
        return [[rows[i] for i in g] for g in groups]

    def _run_chunk(self, cache: Cache, pad: int, chunk: list[_Row],
                   slot: Mapping[int, int]) -> Float[Array, "B K"]:
        """Launches one batched suffix call (``[B, K]`` probabilities); charges its FLOPs."""
        b = _bucket(len(chunk), self.chunk_rows)
        width = _round_up(max(len(r.ids) - r.start for r in chunk), _WIDTH)
        k = _round_up(max(len(r.reads) for r in chunk), _READS)
        tokens, reads = np.zeros((b, width), np.int32), np.zeros((b, k), np.int32)
        rows, write_pos = np.zeros(b, np.int32), np.zeros(b, np.int32)
        for i, r in enumerate(chunk):
            tokens[i, : len(r.ids) - r.start] = r.ids[r.start:]
            reads[i, : len(r.reads)] = r.reads - r.start
            rows[i], write_pos[i] = slot.get(r.problem, 0), r.start
        self._charge(chunk, b * width * self.cost.flops_per_token(pad + width)
                     + self.cost.heads(b * k))
        _, program = _programs(self.compiler_options)
        return program(self.graphdef, self.params, self.head, cache, jnp.asarray(rows),
                       jnp.asarray(tokens), jnp.asarray(write_pos), jnp.asarray(reads),
                       spec=self.spec)

    def _charge(self, chunk: list[_Row], executed: float) -> None:
        f = self.flops
        f.executed += executed
        f.useful += sum(self.cost.suffix(r.common, len(r.ids)) + self.cost.heads(len(r.reads))
                        for r in chunk)
        f.rows += len(chunk)
        f.full_rows += sum(r.start == 0 for r in chunk)


def pack_chunks(lengths: Sequence[int], *, rows: int, tokens: int) -> list[list[int]]:
    """Indices of consecutive runs of (length-sorted) items, each run at most ``rows`` long and
    at most ``tokens`` in ``bucket(rows) * width`` (``width`` the run's last length rounded up
    to a multiple of 16)."""
    chunks: list[list[int]] = []
    for i, n in enumerate(lengths):
        width = _round_up(n, _WIDTH)
        if chunks and len(chunks[-1]) < rows and (
                _bucket(len(chunks[-1]) + 1, rows) * width <= tokens):
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def _bucket(n: int, cap: int) -> int:
    """``n`` rounded up to a power of two, at most ``max(n, cap)``."""
    return max(n, min(cap, 1 << max(n - 1, 0).bit_length()))


# --------------------------------------------------------------------------- loading


def _directory(path: str | Path) -> Path:
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        what = "does not exist" if not directory.exists() else "has no config.json"
        raise ConfigError(f"reward model path {directory} {what}: give a Hugging Face model "
                          "directory (config.json, model.safetensors or its index, tokenizer "
                          "files), e.g. one written by save_pretrained.")
    return directory


def _family(fmt: RewardFormat, config: Mapping[str, Any], directory: Path) -> str:
    """The trunk's ttc family, after checking that the architecture fits the format."""
    arch = (config.get("architectures") or [None])[0]
    by_type = {t: f for f, (_, t) in ARCHITECTURES.items()}
    fits = {f.architecture for f in FORMATS if arch and arch.endswith(f.architecture)}
    if arch is None or not arch.endswith(fmt.architecture):
        other = [f.name for f in FORMATS if f.architecture in fits]
        raise ConfigError(
            f"reward format {fmt.name!r} reads *{fmt.architecture} checkpoints, but "
            f"{directory / 'config.json'} declares architecture {arch!r}"
            + (f" (a checkpoint for format(s) {', '.join(other)})" if other else "")
            + ": choose the format that matches the checkpoint.")
    if config.get("model_type") not in by_type:
        raise ConfigError(
            f"{directory} has model_type {config.get('model_type')!r}: ttc.hub.reward builds "
            f"trunks of the model types {sorted(by_type)} only.")
    return by_type[config["model_type"]]


def _single_token(tokenizer: Any, text: str, role: str, fmt: RewardFormat) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(
            f"reward format {fmt.name!r} needs its {role} {text!r} to be a single token, but "
            f"this tokenizer splits it into {len(ids)} tokens "
            f"{tokenizer.convert_ids_to_tokens(ids)}: the checkpoint is not a {fmt.name} model "
            "or its tokenizer files are not the ones it was trained with.")
    return int(ids[0])


def _head_tensors(kind: str, tensors: Mapping[str, np.ndarray], fmt: RewardFormat,
                  source: str) -> dict[str, np.ndarray]:
    """The head's tensors in ttc layout (float32 copies), or a ConfigError naming the missing."""
    rules = names.REWARD_HEADS[kind]
    missing = [hf for hf, _ in rules.values() if hf not in tensors]
    if missing:
        raise ConfigError(
            f"reward format {fmt.name!r} needs the head tensor(s) {missing} ({kind} head), but "
            f"the checkpoint {source} has none of that name: it is not a "
            f"*{fmt.architecture} checkpoint of this format, or the file is incomplete.")
    return {k: np.array(names.from_hf(np.asarray(tensors[hf]), t), np.float32)
            for k, (hf, t) in rules.items()}


def _lm_pair(tensors: Mapping[str, np.ndarray], ids: tuple[int, int], tied: bool,
             fmt: RewardFormat, source: str) -> dict[str, np.ndarray]:
    """The ``[D, 2]`` good/bad columns of the LM head (the embedding's rows when tied)."""
    table = names.REWARD_HEADS["lm_pair"]["w"][0]
    if table not in tensors and tied:
        table = names.LLAMA["embed.embedding"][0]
    if table not in tensors:
        raise ConfigError(f"reward format {fmt.name!r} reads the LM head, but the checkpoint "
                          f"{source} has no {table!r} and does not tie its embeddings.")
    return {"w": np.array(np.asarray(tensors[table])[list(ids)].T, np.float32)}


def _load_head(fmt: RewardFormat, cfg: LlamaConfig, tensors: Mapping[str, np.ndarray],
               pair: tuple[int, int] | None, source: str
               ) -> tuple[dict[str, np.ndarray], _HeadSpec]:
    if fmt.head == "lm_pair":
        return (_lm_pair(tensors, pair, cfg.tie_embeddings, fmt, source),
                _HeadSpec(kind="lm_pair", softcap=cfg.final_softcap))
    head = _head_tensors(fmt.head, tensors, fmt, source)
    labels = head["w2" if fmt.head == "process" else "w"].shape[1]
    if labels not in ((2,) if fmt.head == "process" else (1, 2)):
        raise ConfigError(f"reward format {fmt.name!r}: the checkpoint {source} has "
                          f"{labels} labels; ttc scores 1 (sigmoid) or 2 (softmax) labels.")
    return head, _HeadSpec(kind=fmt.head, labels=labels)


def load_reward(path: str | Path, *, format: str, dtype: str = "float32",
                compiler_options: Mapping[str, Any] | None = None, **options: int) -> HubReward:
    """Loads a Hugging Face reward model directory as a :class:`HubReward`.

    Args:
        path: a directory with ``config.json``, ``model.safetensors`` (or a sharded index) and
            the tokenizer files (with a chat template for the chat formats).
        format: one of :data:`FORMATS`' names.
        dtype: ``'float32'`` | ``'bfloat16'`` for the trunk's parameters and cache (the head
            runs in float32).
        compiler_options: XLA options for the jitted programs.
        **options: :class:`HubReward` batching fields (``chunk_rows``, ``chunk_tokens``,
            ``prefix_rows``).

    Raises:
        ConfigError: an unknown format, a missing path, an architecture or head that does not
            match the format, or a marker/good/bad string that is not one token.
        ValueError: trunk tensors missing or misshapen (:func:`ttc.hub.hf.load_hf_tensors`).
    """
    fmt = _format(format)
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    directory = _directory(path)
    config = json.loads((directory / "config.json").read_text())
    family = _family(fmt, config, directory)
    tokenizer = _tokenizer(directory, fmt)
    marker_id = None if fmt.marker is None else _single_token(tokenizer, fmt.marker, "marker",
                                                              fmt)
    pair = None if fmt.good is None else (_single_token(tokenizer, fmt.good, "good token", fmt),
                                          _single_token(tokenizer, fmt.bad, "bad token", fmt))
    cfg = config_from_hf({**config, "architectures": [ARCHITECTURES[family][0]]}, dtype=dtype)
    tensors, source = _checkpoint_tensors(directory)
    head, spec = _load_head(fmt, cfg, tensors, pair, source)
    trunk_cfg = dataclasses.replace(cfg, tie_embeddings=True)  # no LM head in the trunk
    skip = {hf for hf, _ in names.REWARD_HEADS[fmt.head].values()}
    trunk = load_hf_tensors(trunk_cfg, {k: v for k, v in tensors.items() if k not in skip},
                            source=source)
    graphdef, params = nnx.split(trunk)
    return HubReward(path=directory, format=fmt, cfg=trunk_cfg, graphdef=graphdef,
                     params=params, head={k: jnp.asarray(v) for k, v in head.items()},
                     spec=spec, tokenizer=tokenizer, marker_id=marker_id,
                     compiler_options=tuple(sorted((compiler_options or {}).items())),
                     **options)


def _tokenizer(directory: Path, fmt: RewardFormat) -> Any:
    from ttc.hub.model import _dir_tokenizer

    tokenizer = _dir_tokenizer(directory)
    if tokenizer is None:
        raise ConfigError(f"{directory} has no tokenizer files: reward format {fmt.name!r} "
                          "scores text and needs the checkpoint's tokenizer.")
    if fmt.chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"reward format {fmt.name!r} lays text out through a chat template, "
                          f"but the tokenizer of {directory} has none.")
    return tokenizer
