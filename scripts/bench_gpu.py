"""Accelerator benchmark of ttc's bfloat16 compute path, against the HBM-bandwidth roofline.

Models (randomly initialised Llama-family decoders, :class:`ttc.models.LlamaConfig`, built on
the default device; throughput does not depend on the weights' values, so random weights of a
public model's exact shape stand in for it):

* ``smollm2-135m``: the shape of SmolLM2-135M-Instruct (hidden 576, 30 layers, 9 heads, 3 KV
  heads, MLP 1536, vocabulary 49152, tied embeddings, RoPE theta 100000): 134.5M parameters;
* ``llama-1b``: the shape of Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP
  8192, vocabulary 128256, tied embeddings, RoPE theta 500000 with llama3 scaling): 1.24B.

Parameters and KV cache are bfloat16 (``--dtype float32`` selects float32). Sections, each at
every batch of ``--batch`` (default 64 and 256; a batch is the number of rows decoded at once):

* ``decode``: one shared prompt (``decode_prompt`` tokens) prefilled once and broadcast to the
  rows, then exactly ``decode_new`` sampled tokens per row (temperature 1, no row stops), in one
  ``jax.jit`` (``make_ttc_decode`` of ``scripts/bench.py``). Tokens/s and the roofline fraction.
* ``methods``: pool sampling (:func:`ttc.decode.generate_solutions`, ``slots = batch``,
  ``pool_waves * batch`` samples so that the sampler keeps every slot busy) against particle
  filtering (:func:`ttc.search.loop.run_search`, ``method='particle'``, one chunk of ``batch``
  rows) scored by a PRM: a second random model of the same shape with a scalar value head,
  consuming each token inside the decode loop as the search does. Wall time per generated token
  of each, and their ratio against pool sampling plus the PRM scoring of its pool (both then
  pay for one policy and one PRM forward per token).
* ``prm_scoring``: that scoring of the pool's finished solutions
  (:func:`ttc.evaluate.sources.score_pool`: prompts once, solutions in length-sorted chunks):
  solution tokens scored per second and the useful/executed FLOPs of
  :func:`ttc.ledger.pool_reward_ledger`, as the records compute them.

The search workload is synthetic (:class:`RandomStepsTask`): random prompts over a vocabulary in
which a fixed random ``step_fraction`` of the ids end a step, so the near-uniform random policy
writes steps of geometric length (mean ``1 / step_fraction`` tokens, at most ``max_step_len``)
and every solution runs to the end of its cache (``EOS`` is one id in ``V``).

Roofline. A decode step reads every parameter and each row's KV cache, so its time is at least
``bytes_per_step / bandwidth``, with ``bytes_per_step = parameter bytes + rows * mean context *
KV bytes per token`` in the compute dtype (``KV bytes per token = 2 * n_layers * n_kv_heads *
head_dim * itemsize``; the mean context of decode is ``prompt + (new + 1) / 2``). The fraction
is ``bytes_per_step * steps_per_s / bandwidth``, against the vendor's spec-sheet bandwidth of the
device (:data:`HBM_SPECS`, looked up by ``device_kind``) and against the bandwidth measured in
the same run (a jitted ``x + 1`` over ``copy_mib`` MiB, 1 GiB: bytes = 2 * size). A particle
filtering step also runs the PRM: its parameters and KV cache are counted too.

Usage::

    bash scripts/bench_gpu.sh OUT_DIR              # everything, on an accelerator (~8 min)
    python scripts/bench_gpu.py --out OUT_DIR      # the same, without the shell wrapper
    python scripts/bench_gpu.py --quick --out DIR  # tiny sizes, any backend (tests/test_bench.py)

The sizes are :data:`FULL` (:data:`QUICK` with ``--quick``); ``--set FIELD=VALUE`` overrides a
field of :class:`Workload`. Writes ``OUT_DIR/bench_gpu.json`` and ``OUT_DIR/bench_gpu.md``
(after every cell, so a run cut short keeps what it measured). Exit status: 0 when every cell
ran, 1 when one failed (its row holds ``error``), 2 on a CPU backend without ``--quick`` or
``--allow-cpu``, 3 when cells were skipped for ``--deadline-s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc.decode import SamplingParams, generate_solutions
from ttc.evaluate.sources import PoolScores, RewardSource, score_pool
from ttc.flops import Ledger
from ttc.ledger import pool_ledger, pool_reward_ledger, search_ledger
from ttc.memory import plan_rows
from ttc.models import LlamaConfig, create
from ttc.rewards import RewardSpec
from ttc.search.loop import SearchConfig, run_search
from ttc.tasks.base import ProblemSet
from ttc.tasks.hf_tokenizer import HFTokenizer


def _load_bench() -> ModuleType:
    """``scripts/bench.py`` as a module (its timing helpers and ``make_ttc_decode``)."""
    name = "ttc_scripts_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("bench.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the class is built
        spec.loader.exec_module(mod)
    return sys.modules[name]


BENCH = _load_bench()


# ---------------------------------------------------------------------------------------------
# Models and workloads
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BenchModel:
    """A Llama-family shape to benchmark with random weights.

    Attributes:
        name: label in the report.
        d_model: hidden size.
        n_layers: decoder layers.
        n_heads: query heads.
        n_kv_heads: key/value heads (GQA).
        d_ff: MLP hidden size.
        vocab_size: token ids.
        rope_theta: RoPE base.
        rope_type: ``default`` or ``llama3``.
        rope_factor: ``llama3`` scaling factor.
        tie_embeddings: the LM head reads the embedding table.
        shape_of: the public model whose shape this is.
    """

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    rope_theta: float
    rope_type: str = "default"
    rope_factor: float = 1.0
    tie_embeddings: bool = True
    shape_of: str = ""

    def config(self, dtype: str, max_len: int, head: str = "lm") -> LlamaConfig:
        """The :class:`LlamaConfig` of this shape (``head='scalar'``: the PRM)."""
        return LlamaConfig(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
            n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, d_ff=self.d_ff, max_len=max_len,
            head=head, hf_family="llama", dtype=dtype, norm_eps=1e-5,
            tie_embeddings=self.tie_embeddings, rope_theta=self.rope_theta,
            rope_type=self.rope_type, rope_factor=self.rope_factor,
        )


MODELS: dict[str, BenchModel] = {
    m.name: m for m in (
        BenchModel("smollm2-135m", d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
                   vocab_size=49152, rope_theta=100000.0,
                   shape_of="HuggingFaceTB/SmolLM2-135M-Instruct"),
        BenchModel("llama-1b", d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
                   vocab_size=128256, rope_theta=500000.0, rope_type="llama3",
                   rope_factor=32.0, shape_of="meta-llama/Llama-3.2-1B"),
    )
}
"""The accelerator models, by name."""

QUICK_MODEL = BenchModel("quick", d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=128,
                         vocab_size=512, rope_theta=10000.0, shape_of="none (smoke test)")
"""The ``--quick`` model: a tiny GQA decoder that compiles in seconds on a CPU."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """Sizes of one benchmark run.

    Attributes:
        batches: rows decoded at once, one cell each.
        decode_prompt: shared prompt tokens of the decode section.
        decode_new: new tokens per row of the decode section.
        method_prompt: prompt tokens of the search workload.
        method_solution: most solution tokens (the cache holds prompt + solution).
        step_fraction: fraction of the vocabulary whose ids end a step.
        max_step_len: longest step (a longer one ends its row as malformed).
        max_steps: most steps per solution.
        samples: samples per problem (``N``).
        pool_waves: pool samples per slot (the pool sampler uses every slot from 8 up).
        repeats: timed calls per decode cell (after an untimed warm-up).
        method_rounds: timed rounds per methods cell (pool, scoring, particle interleaved).
        budget_s: stop repeating a decode cell once its timed calls took this long.
        copy_mib: size of the bandwidth probe's array.
        matmul_n: size of the bfloat16 matmul peak probe.
    """

    batches: tuple[int, ...]
    decode_prompt: int
    decode_new: int
    method_prompt: int
    method_solution: int
    step_fraction: float
    max_step_len: int
    max_steps: int
    samples: int
    pool_waves: int
    repeats: int
    method_rounds: int
    budget_s: float
    copy_mib: int
    matmul_n: int


FULL = Workload(batches=(64, 256), decode_prompt=128, decode_new=128, method_prompt=64,
                method_solution=192, step_fraction=1 / 16, max_step_len=96, max_steps=24,
                samples=16, pool_waves=8, repeats=3, method_rounds=2, budget_s=10.0,
                copy_mib=1024, matmul_n=8192)
"""The accelerator workload."""

QUICK = Workload(batches=(8,), decode_prompt=8, decode_new=8, method_prompt=8,
                 method_solution=24, step_fraction=1 / 8, max_step_len=16, max_steps=8,
                 samples=4, pool_waves=8, repeats=1, method_rounds=1, budget_s=5.0,
                 copy_mib=16, matmul_n=256)
"""The ``--quick`` workload (seconds on a CPU)."""


# ---------------------------------------------------------------------------------------------
# Bandwidth and roofline
# ---------------------------------------------------------------------------------------------
HBM_SPECS: tuple[tuple[tuple[str, ...], float | None], ...] = (
    (("GH200",), None),  # HBM3 or HBM3e variants: the device kind does not tell
    (("H100", "PCIe"), 2.0e12),
    (("H100", "NVL"), 3.9e12),
    (("H100",), 3.35e12),  # SXM5, device kind "NVIDIA H100 80GB HBM3"
    (("H200",), 4.8e12),
    (("A100", "80GB", "PCIe"), 1.935e12),
    (("A100", "80GB"), 2.039e12),
    (("A100",), 1.555e12),  # 40 GB
    (("TPU v4",), 1.2e12),
    (("TPU v5 lite",), 8.19e11),
    (("TPU v5e",), 8.19e11),
    (("TPU v5p",), 2.765e12),
    (("TPU v5",), 2.765e12),  # v5p's device kind is "TPU v5"
    (("TPU v6 lite",), 1.64e12),
    (("TPU v6e",), 1.64e12),
)
"""Peak HBM bandwidth in bytes/s by device kind, from the vendors' spec sheets (NVIDIA H100,
H200 and A100 datasheets; Google Cloud TPU system-architecture pages): the first row whose
substrings all occur in ``jax.devices()[0].device_kind`` (case-insensitive) applies."""

SPEC_SOURCE = ("vendor spec sheets: NVIDIA H100/H200/A100 datasheets, Google Cloud TPU "
               "system architecture (v4, v5e, v5p, v6e)")


def spec_bandwidth(device_kind: str) -> tuple[float | None, str | None]:
    """The spec-sheet HBM bandwidth of ``device_kind`` and the table row that matched.

    Returns:
        ``(bytes_per_s, matched)``; ``(None, None)`` for a device not in :data:`HBM_SPECS`
        (a CPU), ``(None, matched)`` for one whose kind does not fix its memory.
    """
    kind = device_kind.lower()
    for keys, bw in HBM_SPECS:
        if all(k.lower() in kind for k in keys):
            return bw, " ".join(keys)
    return None, None


def measure_copy_bandwidth(mib: int, repeats: int = 10) -> dict[str, Any]:
    """Achievable memory bandwidth: best time of a jitted ``x + 1`` over ``mib`` MiB of float32
    on the default device, counting the bytes read and written (``2 * size``)."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    f = jax.jit(lambda a: a + 1.0)
    t, _ = BENCH.time_fn(lambda: f(x).block_until_ready(), repeats, budget_s=10.0)
    moved = 2 * x.nbytes
    return {"array_bytes": int(x.nbytes), "bytes_moved": moved,
            "bytes_per_s": moved / t["best_s"], **t}


def measure_matmul_peak(n: int, dtype: str, repeats: int = 5) -> dict[str, Any]:
    """Best FLOP/s of a jitted chain of 4 ``n x n`` matmuls in ``dtype``
    (:func:`scripts.bench.measure_jax_matmul_peak`)."""
    return BENCH.measure_jax_matmul_peak(n, repeats, dtype=dtype, budget_s=10.0)


def param_bytes(params: Any) -> int:
    """Bytes of every array in a parameter tree (a tied embedding once: the LM head reads the
    same table, whole, at every step)."""
    return int(sum(x.nbytes for x in jax.tree.leaves(params)))


def kv_bytes_per_token(cfg: LlamaConfig) -> int:
    """KV-cache bytes of one position of one row: ``2 * n_layers * n_kv_heads * head_dim *
    itemsize`` (keys and values, every layer, in the cache dtype)."""
    item = jnp.dtype(cfg.jnp_dtype).itemsize
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * item


def roofline_fraction(bytes_per_step: float, steps_per_s: float, bandwidth: float) -> float:
    """The fraction of the HBM roofline: ``bytes_per_step * steps_per_s / bandwidth``."""
    return bytes_per_step * steps_per_s / bandwidth


def roofline_fields(bytes_per_step: float, steps_per_s: float,
                    bw: dict[str, Any]) -> dict[str, Any]:
    """Report fields of a decode loop's bandwidth use against the spec and the measured
    bandwidth (``bw``: the report's ``bandwidth`` entry)."""
    spec, measured = bw["spec_bytes_per_s"], bw["measured_bytes_per_s"]
    return {
        "bytes_per_step": bytes_per_step,
        "steps_per_s": steps_per_s,
        "achieved_bytes_per_s": bytes_per_step * steps_per_s,
        "bandwidth_spec": spec,
        "bandwidth_measured": measured,
        "roofline_frac_spec": (roofline_fraction(bytes_per_step, steps_per_s, spec)
                               if spec else None),
        "roofline_frac_measured": roofline_fraction(bytes_per_step, steps_per_s, measured),
    }


def device_peak_mib() -> float | None:
    """Peak memory in use on the default device so far (MiB), where the backend reports it."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # not every backend implements it
        return None
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**20 if peak is not None else None


# ---------------------------------------------------------------------------------------------
# The synthetic search workload
# ---------------------------------------------------------------------------------------------
class SyntheticVocab:
    """A stand-in for a ``transformers`` tokenizer over ``vocab_size`` ids, from which
    :class:`ttc.tasks.hf_tokenizer.HFTokenizer` builds the step tables of a random vocabulary.

    Ids 0, 1, 2 are ``<pad>``, ``<s>``, ``</s>``; a fixed random ``step_fraction`` of the others
    decode to text that contains the step delimiter ``"\\n"``, the rest to ``"t<id> "``.
    """

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    all_special_ids = (0, 1, 2)

    def __init__(self, vocab_size: int, step_fraction: float, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n_step = max(1, round(step_fraction * (vocab_size - 3)))
        self.step = np.zeros(vocab_size, bool)
        self.step[3 + rng.choice(vocab_size - 3, n_step, replace=False)] = True
        self.texts = ["<pad>", "<s>", "</s>"] + [
            f"t{i}\n" if self.step[i] else f"t{i} " for i in range(3, vocab_size)]
        self._ids = {t: i for i, t in enumerate(self.texts)}

    def __len__(self) -> int:
        return len(self.texts)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self._ids[w + " "] for w in text.split() if w + " " in self._ids]
        return {"input_ids": [self.bos_token_id] * add_special_tokens + ids}

    def batch_decode(self, seqs: list[list[int]], skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool = False) -> list[str]:
        return ["".join(self.texts[i] for i in s if not (skip_special_tokens and i < 3))
                for s in seqs]

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.texts[i]


@dataclasses.dataclass(frozen=True, eq=False)
class RandomStepsTask:
    """A :class:`ttc.tasks.base.Task` for throughput alone: random prompts of
    ``max_prompt_len`` tokens (``BOS`` and ids that end no step); every answer is 0 and every
    prefix correct (no verifier here reads them: the PRM scores).

    Attributes:
        tokenizer: the :class:`HFTokenizer` of a :class:`SyntheticVocab`.
        max_prompt_len: prompt tokens.
        max_solution_len: most solution tokens.
        max_steps: most steps.
        max_step_len: longest well-formed step.
        name: the task's name.
        num_answers: answer ids.
    """

    tokenizer: HFTokenizer
    max_prompt_len: int
    max_solution_len: int
    max_steps: int
    max_step_len: int
    name: str = "random-steps"
    num_answers: int = 1

    @classmethod
    def make(cls, vocab_size: int, wl: Workload) -> RandomStepsTask:
        """The task of ``wl``'s search sizes over a ``vocab_size`` synthetic vocabulary."""
        tok = HFTokenizer(SyntheticVocab(vocab_size, wl.step_fraction), step_delimiter="\n")
        return cls(tokenizer=tok, max_prompt_len=wl.method_prompt,
                   max_solution_len=wl.method_solution, max_steps=wl.max_steps,
                   max_step_len=wl.max_step_len)

    def problems(self, n: int, *, seed: int, split: str) -> ProblemSet:
        """``n`` random prompts (``split`` only seeds them)."""
        rng = np.random.default_rng([seed, split == "test"])
        plain = np.flatnonzero(~self.tokenizer.step_contains)
        plain = plain[plain >= 3]
        body = rng.choice(plain, size=(n, self.max_prompt_len - 1))
        bos = np.full((n, 1), self.tokenizer.BOS)
        zeros = np.zeros(n, np.int32)
        return ProblemSet(
            prompts=np.concatenate([bos, body], axis=1).astype(np.int32),
            prompt_len=np.full(n, self.max_prompt_len, np.int32), answers=zeros,
            difficulty=zeros, gold=np.zeros((n, self.max_solution_len + 1), np.int32),
            texts=("",) * n)

    def extract_answer(self, tokens: jax.Array, prompt_len: jax.Array) -> jax.Array:
        return jnp.zeros(jnp.shape(prompt_len), jnp.int32)

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        return []

    def prefix_correct(self, tokens: jax.Array, prompt_len: jax.Array, length: jax.Array,
                       gold: jax.Array) -> jax.Array:
        return jnp.ones(jnp.shape(prompt_len), bool)


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Built:
    """A randomly initialised model on the default device.

    Attributes:
        cfg: its config.
        graphdef: its graph definition.
        params: its parameters.
        bytes: :func:`param_bytes` of ``params``.
        init_s: wall time of the initialisation (compile included).
    """

    cfg: LlamaConfig
    graphdef: nnx.GraphDef
    params: Any
    bytes: int
    init_s: float


def init_model(cfg: LlamaConfig, seed: int) -> Built:
    """Random parameters of ``cfg`` drawn on the default device, op by op (no host copy; one
    small kernel per distinct shape, where a jitted init of a 30-layer model compiles for
    about a minute on a CPU)."""
    t0 = time.perf_counter()
    graphdef, params = nnx.split(create(cfg, seed))
    params = jax.block_until_ready(params)
    return Built(cfg, graphdef, params, param_bytes(params), time.perf_counter() - t0)


class Models:
    """Policies and PRMs of the run, built on first use and kept for later cells."""

    def __init__(self, dtype: str, max_len: int) -> None:
        self.dtype, self.max_len = dtype, max_len
        self._built: dict[tuple[str, str], Built] = {}

    def get(self, bm: BenchModel, head: str) -> Built:
        """The ``head='lm'`` policy (seed 0) or ``head='scalar'`` PRM (seed 1) of ``bm``."""
        key = (bm.name, head)
        if key not in self._built:
            built = init_model(bm.config(self.dtype, self.max_len, head), seed=int(head != "lm"))
            print(f"# built {bm.name} {head}: {built.cfg.n_params:,} parameters, "
                  f"{built.bytes / 2**30:.2f} GiB, {built.init_s:.1f} s", flush=True)
            self._built[key] = built
        return self._built[key]


def _timing(stats: dict[str, float]) -> dict[str, float]:
    return {k: stats[k] for k in ("warmup_s", "best_s", "median_s", "repeats")}


def decode_cell(bm: BenchModel, batch: int, models: Models, wl: Workload,
                bw: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode throughput of ``bm`` at ``batch`` rows and its roofline fraction."""
    pol = models.get(bm, "lm")
    cfg, lp, new = pol.cfg, wl.decode_prompt, wl.decode_new
    run = BENCH.make_ttc_decode(pol.graphdef, cfg, batch, lp, new)
    prompt = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, lp), jnp.int32)
    sp = SamplingParams.make(temperature=1.0)
    keys = iter(jax.random.split(jax.random.key(1), 1000))

    def call():
        return jax.block_until_ready(run(pol.params, prompt, next(keys), sp))

    stats, (tokens, useful) = BENCH.time_fn(call, wl.repeats, wl.budget_s)
    if not (np.asarray(useful) == new).all() or tokens.shape != (batch, lp + new):
        raise RuntimeError("decode did not generate exactly decode_new tokens per row")
    kv_tok = kv_bytes_per_token(cfg)
    mean_ctx = lp + (new + 1) / 2
    kv = batch * mean_ctx * kv_tok
    return [{
        "section": "decode", "model": bm.name, "batch": batch, "dtype": cfg.dtype,
        "prompt_len": lp, "new_tokens": new, "n_params": cfg.n_params,
        "param_bytes": pol.bytes, "kv_bytes_per_token": kv_tok, "mean_context": mean_ctx,
        "kv_bytes": kv, "kv_bytes_full_cache": batch * (lp + new) * kv_tok,
        "tokens_per_s": batch * new / stats["best_s"],
        "tokens_per_s_median": batch * new / stats["median_s"],
        **roofline_fields(pol.bytes + kv, new / stats["best_s"], bw), **_timing(stats),
        "device_peak_mib": device_peak_mib(),
    }]


def _flops(led: Ledger, problems: int) -> dict[str, float]:
    """Totals of a per-problem ledger over ``problems`` problems."""
    useful, executed = led.total_useful * problems, led.total_executed * problems
    return {"useful_flops": useful, "executed_flops": executed,
            "useful_over_executed": useful / executed}


@dataclasses.dataclass(frozen=True)
class MethodsRun:
    """What one methods cell ran and measured.

    Attributes:
        bm: the model shape.
        batch: rows decoded at once.
        pol: the policy.
        prm: the PRM.
        src: the PRM as a reward source.
        pool_ps: the pool's problems.
        pf_ps: the particle filter's problems.
        samples: the pool (:class:`ttc.decode.Samples`).
        scored: the PRM's scores of the pool (:class:`ttc.evaluate.sources.PoolScoring`).
        search: the particle filter's result (:class:`ttc.search.loop.SearchResult`).
        stats: timings by name (``pool``, ``prm_scoring``, ``particle``).
        base: the fields every row of the cell shares.
    """

    bm: BenchModel
    batch: int
    pol: Built
    prm: Built
    src: RewardSource
    pool_ps: ProblemSet
    pf_ps: ProblemSet
    samples: Any
    scored: Any
    search: Any
    stats: dict[str, dict[str, float]]
    base: dict[str, Any]


def run_methods(bm: BenchModel, batch: int, models: Models, wl: Workload) -> MethodsRun:
    """Pool sampling of ``pool_waves * batch`` samples on ``batch`` slots, the PRM scoring of
    that pool and particle filtering of ``batch`` rows, each timed in ``method_rounds``
    interleaved rounds after a warm-up (compilation)."""
    if batch % wl.samples:
        raise ValueError(f"batch {batch} is not a multiple of samples={wl.samples}")
    pol, prm = models.get(bm, "lm"), models.get(bm, "scalar")
    task = RandomStepsTask.make(bm.vocab_size, wl)
    plan = plan_rows(pol.cfg, cache_len=task.max_prompt_len + task.max_solution_len,
                     want_rows=batch)
    if plan.rows < batch:  # the samplers would run fewer rows than the cell's batch
        raise RuntimeError(f"the memory plan runs {plan.rows} rows, not {batch}: {plan}")
    n = wl.samples
    pool_ps = task.problems(wl.pool_waves * batch // n, seed=0, split="test")
    pf_ps = task.problems(batch // n, seed=1, split="test")
    sp = SamplingParams.make(temperature=1.0)
    spec = RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len)
    src = RewardSource(spec=spec, params=prm.params, cfg=prm.cfg)
    out: dict[str, Any] = {}

    def pool() -> None:
        out["pool"] = generate_solutions(
            pol.graphdef, pol.params, task, pool_ps.prompts, pool_ps.prompt_len, num_samples=n,
            sampling=sp, key=jax.random.key(2), max_rows=batch, slots=batch, devices=1)

    def scoring() -> None:
        out["scored"] = score_pool(src, task, out["pool"], pool_ps, seed=0, devices=1)

    def particle() -> None:
        out["particle"] = run_search(
            pol.graphdef, pol.params, spec, prm.params, task, pf_ps.prompts, pf_ps.prompt_len,
            pf_ps.gold, cfg=SearchConfig(method="particle"), num_samples=n, sampling=sp,
            key=jax.random.key(3), max_rows=batch, chunk_rows=batch, devices=1)

    stats = BENCH._interleaved({"pool": pool, "prm_scoring": scoring, "particle": particle}, {},
                               wl.method_rounds)
    base = {"model": bm.name, "batch": batch, "dtype": pol.cfg.dtype, "N": n,
            "prompt_len": task.max_prompt_len, "max_solution_len": task.max_solution_len,
            "step_fraction": wl.step_fraction, "max_step_len": task.max_step_len}
    return MethodsRun(bm=bm, batch=batch, pol=pol, prm=prm, src=src, pool_ps=pool_ps,
                      pf_ps=pf_ps, samples=out["pool"], scored=out["scored"],
                      search=out["particle"], stats=stats, base=base)


def pool_row(run: MethodsRun, bw: dict[str, Any]) -> dict[str, Any]:
    """Pool sampling: tokens/s, the ledger's FLOPs and the roofline of its decode loop (its
    ``batch`` slots at every iteration)."""
    s, p, n = run.samples, len(run.pool_ps), run.base["N"]
    tokens = float(s.useful_tokens.sum())
    iterations = float(s.executed_row_steps.sum()) / run.batch
    ctx = float(s.useful_ctx.sum()) / tokens
    t = run.stats["pool"]["best_s"]
    kv = run.batch * ctx * kv_bytes_per_token(run.pol.cfg)
    return {"section": "methods", "impl": "pool", **run.base, "problems": p, "samples": p * n,
            "tokens": tokens, "iterations": iterations, "mean_context": ctx,
            "s_per_token": t / tokens, "tokens_per_s": tokens / t,
            **_flops(pool_ledger(run.pol.cfg, s, run.pool_ps, n), p),
            **roofline_fields(run.pol.bytes + kv, iterations / t, bw),
            **_timing(run.stats["pool"])}


def scoring_row(run: MethodsRun, matmul_peak: float) -> dict[str, Any]:
    """PRM scoring of the pool: solution tokens scored per second and the FLOPs of
    :func:`ttc.ledger.pool_reward_ledger`."""
    s, sc, p, n = run.samples, run.scored, len(run.pool_ps), run.base["N"]
    t = run.stats["prm_scoring"]["best_s"]
    led = Ledger()
    pool_reward_ledger(led, run.src, PoolScores(
        steps=sc.steps, mask=sc.mask, seconds=t, executed=sc.executed,
        prefill_executed=sc.prefill_executed, useful=sc.useful), s, run.pool_ps, n)
    fl = _flops(led, p)
    tokens = float(s.useful_tokens.sum())
    return {"section": "prm_scoring", "impl": "score_pool", **run.base, "problems": p,
            "samples": p * n, "tokens": tokens,
            "prompt_tokens": float(run.pool_ps.prompt_len.sum()), "tokens_per_s": tokens / t,
            **fl, "useful_flops_per_s": fl["useful_flops"] / t,
            "frac_matmul_peak": fl["useful_flops"] / t / matmul_peak,
            **_timing(run.stats["prm_scoring"])}


def particle_row(run: MethodsRun, bw: dict[str, Any], pool: dict[str, Any],
                 scoring: dict[str, Any]) -> dict[str, Any]:
    """Particle filtering: tokens/s, the ledger's FLOPs, the roofline of its decode loop
    (policy and PRM at every iteration) and its time per token over pool sampling's, with and
    without the PRM scoring of the pool."""
    w, p, n = run.search.work, len(run.pf_ps), run.base["N"]
    tokens = float(w.dec_tokens.sum() + w.look_tokens.sum())
    iterations = float(w.dec_steps.sum()) / run.batch
    ctx = float(w.dec_ctx.sum()) / float(w.dec_tokens.sum())
    t = run.stats["particle"]["best_s"]
    kv = 2 * run.batch * ctx * kv_bytes_per_token(run.pol.cfg)  # the policy's and the PRM's
    pool_prm = (pool["best_s"] + scoring["best_s"]) / pool["tokens"]
    return {"section": "methods", "impl": "particle", **run.base, "problems": p,
            "samples": p * n, "tokens": tokens, "iterations": iterations,
            "search_steps": float(np.max(w.iterations)), "mean_context": ctx,
            "s_per_token": t / tokens, "tokens_per_s": tokens / t,
            **_flops(search_ledger(run.pol.cfg, run.src, run.search, run.pf_ps), p),
            **roofline_fields(run.pol.bytes + run.prm.bytes + kv, iterations / t, bw),
            "pool_prm_s_per_token": pool_prm, "over_pool_prm": (t / tokens) / pool_prm,
            "over_pool": (t / tokens) / pool["s_per_token"],
            **_timing(run.stats["particle"]), "device_peak_mib": device_peak_mib()}


def methods_cell(bm: BenchModel, batch: int, models: Models, wl: Workload,
                 bw: dict[str, Any], matmul_peak: float) -> list[dict[str, Any]]:
    """Pool sampling, its PRM scoring and particle filtering of ``bm`` at ``batch`` rows."""
    run = run_methods(bm, batch, models, wl)
    pool, scoring = pool_row(run, bw), scoring_row(run, matmul_peak)
    return [pool, scoring, particle_row(run, bw, pool, scoring)]


# ---------------------------------------------------------------------------------------------
# Targets and the summary
# ---------------------------------------------------------------------------------------------
FIRST_CELL_GUESS_S = {"decode": 30.0, "methods": 120.0}
"""What the deadline assumes a section's first cell takes (compilation included) before one
has run."""

DECODE_TARGET = 0.70
"""Decode of the target cell reaches this fraction of the spec-sheet HBM roofline."""
METHODS_TARGET = 1.5
"""Particle filtering and pool sampling (with the PRM scoring of its pool) within this factor
of each other per generated token."""


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with its value and ``met`` (``None`` when it was not measured)."""
    model, batch = report["target_cell"]
    rows = report["sections"]
    cell = [r for r in rows.get("decode", []) if r.get("model") == model
            and r.get("batch") == batch and "roofline_frac_measured" in r]
    frac, basis = None, "not measured"
    if cell:
        r = cell[0]
        frac, basis = ((r["roofline_frac_spec"], "spec-sheet bandwidth")
                       if r["roofline_frac_spec"] is not None
                       else (r["roofline_frac_measured"], "measured bandwidth (no spec entry)"))
    out = [{"target": f"decode {model} at batch {batch} >= {DECODE_TARGET:.0%} of the HBM "
                      "roofline", "value": frac, "basis": basis,
            "met": None if frac is None else frac >= DECODE_TARGET}]
    methods = f"particle filtering within {METHODS_TARGET}x of pool sampling + PRM scoring"
    cells = [r for r in rows.get("methods", []) if "over_pool_prm" in r]
    for r in cells:
        ratio = r["over_pool_prm"]
        out.append({"target": f"{r['model']} at batch {r['batch']}: {methods} per token",
                    "value": ratio, "basis": "wall time per generated token",
                    "met": 1 / METHODS_TARGET <= ratio <= METHODS_TARGET})
    if not cells and "methods" in report["args"]["sections"]:
        out.append({"target": f"{methods} per token", "value": None, "basis": "not measured",
                    "met": None})
    return out


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _tbps(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e12:.3f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown page: device, probes, one table per section, the targets."""
    bw, mm = report["bandwidth"], report["matmul_peak"]
    sec = report["sections"]
    lines = [
        "# ttc accelerator benchmark", "",
        f"Device: {report['device']['device_kind']} ({report['device']['platform']}, "
        f"jax {report['machine']['jax']}); dtype {report['args']['dtype']}; "
        f"{'quick mode; ' if report['args']['quick'] else ''}wall {report['wall_s']:.0f} s.",
        f"HBM bandwidth: spec {_tbps(bw['spec_bytes_per_s'])} TB/s "
        f"({bw['spec_match'] or 'no table entry'}), measured "
        f"{bw['measured_bytes_per_s'] / 1e12:.3f} TB/s (jitted x + 1 over "
        f"{bw['array_bytes'] / 2**20:.0f} MiB, bytes = 2 x size). "
        f"{mm['dtype']} matmul peak {mm['flops_per_s'] / 1e12:.1f} TFLOP/s ({mm['n']}^2).",
        "Random weights of each model's exact shape (throughput does not depend on values).",
        "", "## Decode", "",
        "| model | batch | tokens/s | steps/s | GB/step | achieved GB/s | roofline (spec) | "
        "roofline (measured) | warm-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sec.get("decode", []):
        if "tokens_per_s" not in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('error') or r.get('skipped')} "
                         "| | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['steps_per_s']:.1f} "
            f"| {r['bytes_per_step'] / 1e9:.4g} | {r['achieved_bytes_per_s'] / 1e9:,.4g} | "
            f"{_pct(r['roofline_frac_spec'])} | {_pct(r['roofline_frac_measured'])} | "
            f"{r['warmup_s']:.1f} |")
    lines += ["", "## Pool sampling and particle filtering (per generated token)", "",
              "| model | batch | impl | tokens | s/token | tokens/s | roofline (spec) | "
              "roofline (measured) | useful/executed | vs pool + PRM | vs pool | warm-up s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sec.get("methods", []):
        if "s_per_token" not in r:
            lines.append(f"| {r['model']} | {r['batch']} | - | "
                         f"{r.get('error') or r.get('skipped')} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['impl']} | {r['tokens']:,.0f} | "
            f"{r['s_per_token']:.3e} | {r['tokens_per_s']:,.0f} | "
            f"{_pct(r['roofline_frac_spec'])} | {_pct(r['roofline_frac_measured'])} | "
            f"{r['useful_over_executed']:.2f} | {_fmt(r.get('over_pool_prm'), '.2f')} | "
            f"{_fmt(r.get('over_pool'), '.2f')} | {r['warmup_s']:.1f} |")
    lines += ["", "## PRM scoring of the pool", "",
              "| model | batch | solutions | tokens scored/s | useful TFLOP/s | of matmul peak | "
              "useful/executed | s | warm-up s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sec.get("prm_scoring", []):
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['samples']} | {r['tokens_per_s']:,.0f} | "
            f"{r['useful_flops_per_s'] / 1e12:.3g} | {_pct(r['frac_matmul_peak'])} | "
            f"{r['useful_over_executed']:.2f} | {r['best_s']:.2f} | {r['warmup_s']:.1f} |")
    lines += ["", "## Targets", ""]
    for t in report["targets"]:
        verdict = {True: "met", False: "not met", None: "not measured"}[t["met"]]
        lines.append(f"* {t['target']}: {_fmt(t['value'], '.3f')} ({t['basis']}): **{verdict}**")
    problems = report["errors"] + report["skipped"]
    if problems:
        lines += ["", "## Errors and skipped cells", ""] + [f"* {p}" for p in problems]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def plan(models: list[BenchModel], batches: list[int],
         sections: list[str]) -> list[tuple[str, BenchModel, int]]:
    """Cells in run order: decode first (the largest model and batch first: the target cell),
    then the methods cells (the largest batch first; within a batch the model with the fewest
    layers first, whose samplers compile fastest)."""
    size = {m.name: m.d_model**2 * m.n_layers for m in models}
    cells = []
    if "decode" in sections:
        cells += [("decode", m, b) for m in sorted(models, key=lambda m: -size[m.name])
                  for b in sorted(batches, reverse=True)]
    if "methods" in sections:
        cells += [("methods", m, b) for b in sorted(batches, reverse=True)
                  for m in sorted(models, key=lambda m: m.n_layers)]
    return cells


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".", help="directory for bench_gpu.json and bench_gpu.md")
    p.add_argument("--quick", action="store_true",
                   help="a tiny model and batch on any backend (seconds; what the test runs)")
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS),
                   help="models (default: all)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="rows (default 64 256)")
    p.add_argument("--sections", nargs="+", default=["decode", "methods"],
                   choices=["decode", "methods"],
                   help="'methods' also runs the PRM scoring of the pool")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="parameters and KV cache (default bfloat16)")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override fields of the workload (Workload), e.g. decode_new=64")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="skip the cells that would end later than this many seconds after the "
                        "start, judged by the longest cell of the same section so far "
                        "(default 480; --quick: none)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run the full sizes on a CPU backend too (hours)")
    args = p.parse_args(argv)
    args.workload = QUICK if args.quick else FULL
    if args.batch:
        if min(args.batch) < 1:
            p.error("--batch must be positive")
        args.workload = dataclasses.replace(args.workload, batches=tuple(args.batch))
    fields = {f.name for f in dataclasses.fields(Workload)} - {"batches"}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            p.error(f"--set {item!r}: expected FIELD=VALUE with FIELD among {sorted(fields)}")
        kind = type(getattr(args.workload, name))
        args.workload = dataclasses.replace(args.workload, **{name: kind(value)})
    if args.workload.pool_waves < 8:
        p.error("pool_waves must be at least 8: below, the pool sampler uses fewer slots than "
                "the batch")
    args.model_list = [QUICK_MODEL] if args.quick else [MODELS[m] for m in
                                                        (args.models or list(MODELS))]
    if args.deadline_s is None:
        args.deadline_s = 0.0 if args.quick else 480.0
    return args


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["targets"] = evaluate_targets(report)
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "bench_gpu.md").write_text(summary_markdown(report))


def _run_cell(section: str, bm: BenchModel, batch: int, models: Models, wl: Workload,
              report: dict[str, Any]) -> list[dict[str, Any]]:
    if section == "decode":
        return decode_cell(bm, batch, models, wl, report["bandwidth"])
    return methods_cell(bm, batch, models, wl, report["bandwidth"],
                        report["matmul_peak"]["flops_per_s"])


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        head = f"  {r['section']:<11} {r['model']:<13} {r['batch']:>4} {r.get('impl', ''):<10}"
        if "tokens_per_s" not in r:
            print(f"{head} {r.get('error') or r.get('skipped')}", flush=True)
            continue
        extra = (f"roofline {_pct(r.get('roofline_frac_spec'))} spec, "
                 f"{_pct(r.get('roofline_frac_measured'))} measured"
                 if "steps_per_s" in r else f"useful {r['useful_flops_per_s'] / 1e12:.2f} TFLOP/s")
        ratio = f"; vs pool+PRM {r['over_pool_prm']:.2f}x" if "over_pool_prm" in r else ""
        print(f"{head} {r['tokens_per_s']:>12,.0f} tok/s  {extra}{ratio}  "
              f"(best {r['best_s']:.3f} s, warm-up {r['warmup_s']:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and writes the report.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when every cell ran, 1 when one failed, 3 when cells were skipped
        for the deadline.
    """
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    wl = args.workload
    dev = jax.devices()[0]
    if dev.platform == "cpu" and not (args.quick or args.allow_cpu):
        print("bench_gpu.py: the default backend is the CPU; the full sizes need an "
              "accelerator (use --quick for a smoke run, --allow-cpu to insist)", flush=True)
        return 2
    spec, match = spec_bandwidth(dev.device_kind)
    print(f"# {dev.device_kind} ({dev.platform}), jax {jax.__version__}; HBM spec "
          f"{_tbps(spec)} TB/s ({match or 'no table entry'})", flush=True)
    copy = measure_copy_bandwidth(wl.copy_mib)
    mm = measure_matmul_peak(wl.matmul_n, args.dtype)
    print(f"# measured bandwidth {copy['bytes_per_s'] / 1e12:.3f} TB/s; {args.dtype} matmul "
          f"{mm['flops_per_s'] / 1e12:.2f} TFLOP/s", flush=True)
    report: dict[str, Any] = {
        "command": " ".join(["bench_gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": BENCH.machine_info(),
        "device": {"device_kind": dev.device_kind, "platform": dev.platform,
                   "count": jax.device_count()},
        "args": {"quick": args.quick, "dtype": args.dtype, "sections": args.sections,
                 "deadline_s": args.deadline_s, "set": args.set},
        "workload": dataclasses.asdict(wl),
        "models": {m.name: dataclasses.asdict(m) for m in args.model_list},
        "bandwidth": {"device_kind": dev.device_kind, "spec_bytes_per_s": spec,
                      "spec_match": match, "spec_source": SPEC_SOURCE,
                      "measured_bytes_per_s": copy["bytes_per_s"], **copy},
        "matmul_peak": mm,
        "target_cell": [args.model_list[-1].name if args.quick else "llama-1b",
                        max(wl.batches)],
        "sections": {s: [] for s in ("decode", "methods", "prm_scoring")},
        "errors": [], "skipped": [], "wall_s": 0.0,
    }
    max_len = max(wl.decode_prompt + wl.decode_new, wl.method_prompt + wl.method_solution)
    models = Models(args.dtype, max_len)
    longest: dict[str, float] = {}  # the longest cell of each section so far (seconds)
    for section, bm, batch in plan(args.model_list, list(wl.batches), args.sections):
        label = f"{section} {bm.name} batch {batch}"
        elapsed = time.perf_counter() - t0
        guess = longest.get(section, FIRST_CELL_GUESS_S[section])
        if args.deadline_s and elapsed + guess > args.deadline_s:
            why = (f"skipped: {elapsed:.0f} s in, it would end past --deadline-s "
                   f"{args.deadline_s:g}")
            rows = [{"section": section, "model": bm.name, "batch": batch, "skipped": why}]
            report["skipped"].append(f"{label}: {why}")
        else:
            print(f"# [{elapsed:6.1f} s] {label}", flush=True)
            try:
                rows = _run_cell(section, bm, batch, models, wl, report)
            except Exception as e:  # one failed cell must not lose the others
                traceback.print_exc()
                err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                rows = [{"section": section, "model": bm.name, "batch": batch, "error": err}]
                report["errors"].append(f"{label}: {err}")
            spent = time.perf_counter() - t0 - elapsed
            longest[section] = max(longest.get(section, 0.0), spent)
        for r in rows:
            report["sections"][r["section"]].append(r)
        _print_rows(rows)
        report["wall_s"] = time.perf_counter() - t0
        _write(report, out)
    report["wall_s"] = time.perf_counter() - t0
    _write(report, out)
    print("\n" + (out / "bench_gpu.md").read_text(), flush=True)
    bad = [t for t in report["targets"] if t["met"] is False]
    print(f"# wall {report['wall_s']:.0f} s; {len(report['errors'])} failed, "
          f"{len(report['skipped'])} skipped, {len(bad)} target(s) not met; wrote "
          f"{out / 'bench_gpu.json'} and {out / 'bench_gpu.md'}", flush=True)
    if report["errors"]:
        return 1
    return 3 if report["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())

