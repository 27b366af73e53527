"""Decode-throughput benchmark: ttc's decode primitive against Hugging Face ``generate``.

One process runs, side by side, on the same architecture, batch, prompt and number of new tokens:

* this machine's f32 matmul peak, measured in JAX (and in PyTorch when installed);
* ttc: a randomly initialised :class:`ttc.models.transformer.Transformer`, one shared random
  prompt prefilled once and broadcast to ``B`` rows, then exactly ``new_tokens`` sampled tokens
  (temperature 1) per row with :func:`ttc.decode.prefill` + :func:`ttc.decode.decode` inside one
  ``jax.jit`` (stop/EOS ids outside the vocabulary, so no row stops early);
* Hugging Face transformers ``generate`` on PyTorch CPU: randomly initialised Llama-style and
  GPT-2-style models of matching size, ``do_sample=True``, ``max_new_tokens = min_new_tokens =
  new_tokens``, the same ``B`` copies of the same prompt.

More sections: ``methods`` (each search method's wall time per generated token against
best-of-N, useful/executed FLOPs, compilations over a budget grid), ``train`` (SFT steps per
second of the default policy on one device, and two trainings side by side, one per device) and
``real`` (a pretrained model: SmolLM2-135M-Instruct from its GGUF file, ttc's jitted sampler
with the loaded weights against HF ``generate`` on the same file, the first GSM8K test question
through the chat template as the prompt, batches ``--real-batch``; skipped with a message when
the file is missing, and left out of ``--quick`` unless named in ``--sections``).

Compile time and warm-up are excluded; each figure is the best (and the median) of a few timed
repeats. Tokens/s counts generated tokens only (``B * new_tokens`` per call). Useful GFLOP/s uses
the analytic ledger (:mod:`ttc.flops`): one prefill of the shared prompt plus every generated
token at its own context, i.e. the minimum work that produces the output.

Usage::

    python scripts/bench.py                        # default sizes, batches 256 and 1024
    python scripts/bench.py --batch 256 --new-tokens 64 --out bench.json
    python scripts/bench.py --quick                # tiny sizes, runs in seconds
    python scripts/bench.py --sections train       # training throughput only
    python scripts/bench.py --sections real        # SmolLM2-135M: batches 1 16 64, 64 tokens

The harness is a registry of *sections* (:data:`SECTIONS`): each is a function
``fn(args) -> list[dict]`` whose rows land in ``bench.json`` under ``sections[name]`` and in the
printed table. ``main`` measures the matmul peak first and stores it as ``args.peak_gflops`` so
that sections can report a fraction of peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc import flops as ttc_flops
from ttc.decode import SamplingParams, decode, prefill
from ttc.models import TransformerConfig, create
from ttc.parallel import DATA, configure_host_devices, over_rows, usable_cores
from ttc.tasks.stops import StopRule

HF_SKIP_REASON = "skipped: torch/transformers not installed (pip install -e '.[bench]')"


# ---------------------------------------------------------------------------------------------
# Sizes and machine details
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSize:
    """A decoder architecture shared by ttc and the Hugging Face baselines.

    Attributes:
        name: label used in the table and in ``bench.json``.
        d_model: residual width (``hidden_size`` / ``n_embd``).
        n_layers: number of blocks.
        n_heads: attention heads.
        d_ff: MLP hidden width (``intermediate_size`` / ``n_inner``).
        vocab_size: number of token ids.
    """

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab_size: int = 19

    def ttc_config(self, max_len: int) -> TransformerConfig:
        """The matching ttc policy config with ``max_len`` learned positions."""
        return TransformerConfig(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
            n_heads=self.n_heads, d_ff=self.d_ff, max_len=max_len,
        )


# the default ttc policy (conf/policy/tiny.yaml, arithmetic vocabulary), a 1.6M-parameter one and
# a 3.2M-parameter one (not run by default: its batch-1024 cells alone take minutes on 2 cores);
# and the accelerator sizes, ~100M and ~1B parameters with a 32k vocabulary
# (scripts/bench_gpu.sh; far too slow for a 2-core CPU beyond a smoke run)
KNOWN_SIZES: tuple[ModelSize, ...] = (
    ModelSize("policy-tiny", d_model=64, n_layers=2, n_heads=4, d_ff=256),
    ModelSize("1.6M", d_model=256, n_layers=2, n_heads=4, d_ff=1024),
    ModelSize("3.2M", d_model=256, n_layers=4, n_heads=4, d_ff=1024),
    ModelSize("100M", d_model=768, n_layers=12, n_heads=12, d_ff=3072, vocab_size=32000),
    ModelSize("1B", d_model=2048, n_layers=16, n_heads=16, d_ff=8192, vocab_size=32000),
)
DEFAULT_SIZES: tuple[str, ...] = ("policy-tiny", "1.6M")
QUICK_SIZES: tuple[ModelSize, ...] = (
    ModelSize("quick", d_model=32, n_layers=2, n_heads=4, d_ff=64),
)


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, load and library versions of this machine."""
    usable = usable_cores()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": list(os.getloadavg()),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------
def time_fn(fn: Callable[[], Any], repeats: int, budget_s: float,
            warmup: Callable[[], Any] | None = None) -> tuple[dict[str, float], Any]:
    """Times ``fn`` after one untimed warm-up call.

    Args:
        fn: a call that blocks until its result is ready.
        repeats: most timed calls.
        budget_s: stop repeating once the timed calls have taken this long (at least one runs).
        warmup: the untimed first call (default ``fn``).

    Returns:
        ``({warmup_s, best_s, median_s, repeats}, result of the last timed call)``: ``warmup_s``
        is the warm-up call (compilation included), ``repeats`` the timed calls actually made.
    """
    t0 = time.perf_counter()
    (warmup or fn)()
    warmup_s = time.perf_counter() - t0
    times: list[float] = []
    spent = 0.0
    result = None
    while len(times) < max(1, repeats) and (not times or spent < budget_s):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    stats = {
        "warmup_s": warmup_s,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "repeats": len(times),
    }
    return stats, result


def measure_jax_matmul_peak(n: int, repeats: int = 5, *, dtype: str = "float32",
                            budget_s: float = 30.0) -> dict[str, Any]:
    """Best GFLOP/s of a jitted ``n x n`` matmul in ``dtype`` (a chain of 4 per call to hide
    dispatch); ``flops_per_s`` is the same figure in FLOP/s."""
    ka, kb = jax.random.split(jax.random.key(0))
    dt = jnp.dtype(dtype)
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dt)
    b = (jax.random.normal(kb, (n, n), jnp.float32) / np.sqrt(n)).astype(dt)
    chain = 4

    @jax.jit
    def f(a, b):
        for _ in range(chain):
            a = a @ b
        return a

    t, _ = time_fn(lambda: f(a, b).block_until_ready(), repeats, budget_s=budget_s)
    fl = chain * 2.0 * n**3
    return {"impl": "jax", "n": n, "dtype": dtype, "gflops": fl / t["best_s"] / 1e9,
            "flops_per_s": fl / t["best_s"], **t}


def measure_torch_matmul_peak(torch: Any, n: int, repeats: int = 5) -> dict[str, Any]:
    """Best f32 GFLOP/s of a PyTorch ``n x n`` matmul (for reference next to JAX's)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g) / n**0.5
    out = torch.empty(n, n)
    chain = 4

    def f():
        x = a
        for _ in range(chain):
            x = torch.matmul(x, b, out=out if x is not out else None)
        return x

    with torch.inference_mode():
        t, _ = time_fn(f, repeats, budget_s=30.0)
    fl = chain * 2.0 * n**3
    return {"impl": "torch", "n": n, "gflops": fl / t["best_s"] / 1e9, **t}


# ---------------------------------------------------------------------------------------------
# Optional Hugging Face baseline
# ---------------------------------------------------------------------------------------------
def load_hf() -> tuple[Any, Any]:
    """Imports torch and transformers.

    Returns:
        ``(torch, transformers)``.

    Raises:
        ImportError: when either is not installed (the ``bench`` extra is optional).
    """
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # no per-call advice about attention masks
    return torch, transformers


def _hf_models(transformers: Any, size: ModelSize, max_len: int) -> dict[str, Any]:
    """Randomly initialised Llama-style and GPT-2-style causal LMs of ``size``."""
    llama = transformers.LlamaConfig(
        vocab_size=size.vocab_size, hidden_size=size.d_model, num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads, num_key_value_heads=size.n_heads,
        intermediate_size=size.d_ff, max_position_embeddings=max_len,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    gpt2 = transformers.GPT2Config(
        vocab_size=size.vocab_size, n_embd=size.d_model, n_layer=size.n_layers,
        n_head=size.n_heads, n_inner=size.d_ff, n_positions=max_len,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return {
        "hf-llama": transformers.LlamaForCausalLM(llama).eval(),
        "hf-gpt2": transformers.GPT2LMHeadModel(gpt2).eval(),
    }


def _hf_matmul_params(torch: Any, model: Any) -> int:
    """Weights that take part in a matmul per token (Linear / GPT-2 Conv1D, LM head included)."""
    from transformers.pytorch_utils import Conv1D

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear | Conv1D):
            n += m.weight.numel()
    return n


def _useful_flops(matmul_params: int, n_layers: int, d_model: int, batch: int, prompt_len: int,
                  new_tokens: int) -> float:
    """Ledger FLOPs of one shared-prompt prefill plus ``batch * new_tokens`` generated tokens.

    Same formula as :mod:`ttc.flops` (``2 * N_matmul + 4 * n_layers * d_model * context`` per
    token), with the matmul-parameter count of whichever implementation is measured.
    """
    per_tok = 2.0 * matmul_params
    attn = 4.0 * n_layers * d_model
    ctx_sum = sum(prompt_len + i + 1 for i in range(new_tokens))
    prefill_fl = per_tok * prompt_len + attn * prompt_len * (prompt_len + 1) / 2
    return prefill_fl + batch * (per_tok * new_tokens + attn * ctx_sum)


# ---------------------------------------------------------------------------------------------
# Section: decode throughput
# ---------------------------------------------------------------------------------------------
def make_ttc_decode(graphdef: nnx.GraphDef, cfg: TransformerConfig, batch: int, prompt_len: int,
                    new_tokens: int, devices: int = 1) -> Callable:
    """A jitted ``(params, prompt, key, sp) -> (tokens, useful_tokens)`` that prefills one shared
    prompt, broadcasts it to ``batch`` rows and decodes exactly ``new_tokens`` tokens per row.

    With ``devices > 1`` the rows are split over that many devices (:mod:`ttc.parallel`, as the
    samplers do): each prefills the prompt and decodes ``batch / devices`` rows with its own
    fold of ``key``, in one ``jax.shard_map``."""
    never = cfg.vocab_size  # an id outside the vocabulary: never sampled, so no row stops early
    cache_len = prompt_len + new_tokens
    if batch % devices:
        raise ValueError(f"batch={batch} is not a multiple of devices={devices}")

    def local(params, prompt, key, sp):
        if devices > 1:
            key = jax.random.fold_in(key, jax.lax.axis_index(DATA))
        st = prefill(graphdef, params, prompt[None], jnp.full((1,), prompt_len, jnp.int32), key,
                     num_samples=batch // devices, cache_len=cache_len)
        st = decode(graphdef, params, st, sp, stops=StopRule(step_ids=(), eos_ids=(never,)),
                    one_step=False, pad_id=0, max_steps=new_tokens)
        return st.tokens, st.useful_tokens

    return jax.jit(over_rows(local, devices))  # every argument replicated


def bench_ttc(size: ModelSize, batch: int, prompt: np.ndarray, new_tokens: int,
              args: argparse.Namespace, devices: int = 1) -> dict[str, Any]:
    """Times ttc's prefill + decode for one size and batch on ``devices`` devices."""
    lp = len(prompt)
    cfg = size.ttc_config(max_len=max(128, lp + new_tokens))
    graphdef, params = nnx.split(create(cfg, seed=0))
    run = make_ttc_decode(graphdef, cfg, batch, lp, new_tokens, devices)
    prompt_j = jnp.asarray(prompt, jnp.int32)
    sp = SamplingParams.make(temperature=1.0)
    keys = iter(jax.random.split(jax.random.key(1), 1000))

    def call():
        return jax.block_until_ready(run(params, prompt_j, next(keys), sp))

    t, (tokens, useful) = time_fn(call, args.repeats, args.budget_s)
    if not (np.asarray(useful) == new_tokens).all() or tokens.shape != (batch, lp + new_tokens):
        raise RuntimeError("ttc decode did not generate exactly new_tokens tokens per row")
    fl = _useful_flops(cfg.matmul_params, cfg.n_layers, cfg.d_model, batch, lp, new_tokens)
    fl += (devices - 1) * ttc_flops.prefill_useful(cfg, lp)  # each device prefills the prompt
    # cross-check against ttc's own ledger
    ledger = float(ttc_flops.prefill_useful(cfg, lp)) + float(ttc_flops.decode_useful(
        cfg, batch * new_tokens, batch * sum(lp + i + 1 for i in range(new_tokens))))
    ledger += (devices - 1) * ttc_flops.prefill_useful(cfg, lp)
    assert abs(ledger - fl) <= 1e-9 * fl, (ledger, fl)
    return {"devices": devices, "n_params": cfg.n_params, "matmul_params": cfg.matmul_params,
            "useful_flops": fl, **t}


def bench_hf(torch: Any, model: Any, batch: int, prompt: np.ndarray, new_tokens: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """Times Hugging Face ``generate`` (sampling, exactly ``new_tokens`` new tokens).

    There is nothing to compile, so the warm-up call generates only a few tokens at the same
    batch (first-call allocations, thread start-up); every timed call is a full one.
    """
    ids = torch.as_tensor(np.tile(prompt[None], (batch, 1)), dtype=torch.long)
    mask = torch.ones_like(ids)
    torch.manual_seed(0)
    kw = dict(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, pad_token_id=0,
    )

    def call(n: int = new_tokens):
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask,
                                  **{**kw, "max_new_tokens": n, "min_new_tokens": n})

    t, out = time_fn(call, args.repeats, args.budget_s, warmup=lambda: call(min(4, new_tokens)))
    if tuple(out.shape) != (batch, len(prompt) + new_tokens):
        raise RuntimeError(f"HF generate returned shape {tuple(out.shape)}")
    cfg = model.config
    d = cfg.hidden_size
    mm = _hf_matmul_params(torch, model)
    n_params = sum(p.numel() for p in model.parameters())
    fl = _useful_flops(mm, cfg.num_hidden_layers, d, batch, len(prompt), new_tokens)
    return {"n_params": n_params, "matmul_params": mm, "useful_flops": fl, **t}


def _finish_row(row: dict[str, Any], base: dict[str, Any], batch: int, new_tokens: int,
                peak: float | None) -> dict[str, Any]:
    toks = batch * new_tokens
    out = {**base, **row}
    out["tokens_per_s"] = toks / out["best_s"]
    out["tokens_per_s_median"] = toks / out["median_s"]
    out["gflops_useful"] = out["useful_flops"] / out["best_s"] / 1e9
    out["frac_peak"] = out["gflops_useful"] / peak if peak else None
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_decode(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Decode throughput of ttc and HF ``generate`` for every size and batch in ``args``.

    Returns:
        One row per (size, batch, impl[, HF thread count]). HF rows carry ``ttc_over_impl`` (ttc
        tokens/s over theirs); skipped HF rows carry ``skipped`` with the reason. ``load1`` is the
        1-minute load average when the measurement started (other processes on the machine).
    """
    hf = None
    hf_skip = None
    if args.skip_hf:
        hf_skip = "skipped: disabled by --skip-hf"
    else:
        try:
            hf = load_hf()
        except ImportError:
            hf_skip = HF_SKIP_REASON
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    peak = getattr(args, "peak_gflops", None)
    for size in args.sizes:
        prompt = rng.integers(3, size.vocab_size, size=args.prompt_len).astype(np.int64)
        models = _hf_models(hf[1], size, max(128, args.prompt_len + args.new_tokens)) if hf else {}
        for batch in args.batch:
            arch = {k: v for k, v in dataclasses.asdict(size).items() if k != "name"}
            base = {"section": "decode", "size": size.name, **arch,
                    "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens}
            # the default (every device, or one where the batch does not split evenly) first;
            # then one device, for comparison
            default = args.devices if batch % args.devices == 0 else 1
            ttc_rows = []
            for impl, devices in [("ttc", default)] + [("ttc-1dev", 1)] * (default > 1):
                load = os.getloadavg()[0]
                r = bench_ttc(size, batch, prompt, args.new_tokens, args, devices)
                row = _finish_row({"impl": impl, **r, "threads": usable_cores(), "load1": load},
                                  base, batch, args.new_tokens, peak)
                rows.append(row)
                _print_row(row)
                ttc_rows.append(row)
            ttc_row = ttc_rows[0]
            for name in ("hf-llama", "hf-gpt2"):
                if hf is None:
                    row = {**base, "impl": name, "skipped": hf_skip}
                    rows.append(row)
                    _print_row(row)
                    continue
                for threads in args.hf_threads:
                    hf[0].set_num_threads(threads)
                    load = os.getloadavg()[0]
                    r = bench_hf(hf[0], models[name], batch, prompt, args.new_tokens, args)
                    row = _finish_row({"impl": name, "threads": threads, "load1": load, **r},
                                      base, batch, args.new_tokens, peak)
                    row["ttc_over_impl"] = ttc_row["tokens_per_s"] / row["tokens_per_s"]
                    rows.append(row)
                    _print_row(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Section: methods (hook)
# ---------------------------------------------------------------------------------------------
def _bench_policy(args: argparse.Namespace):
    """The policy named by ``--method-policy``, else the newest cached arithmetic-task policy
    under ``checkpoints/`` (or a random one, flagged)."""
    import json
    from pathlib import Path

    from ttc import checkpoint
    from ttc.checkpoint import LoadedModel
    from ttc.models import TransformerConfig, create
    from ttc.tasks import make_task

    task = make_task("arithmetic")
    if args.method_policy:
        path = Path(args.checkpoints) / args.method_policy
        return task, checkpoint.load(path), path.name

    def arithmetic(p: Path) -> bool:  # policies of other tasks have other vocabularies
        try:
            return json.loads((p / "meta.json").read_text())["task"]["name"] == task.name
        except (OSError, KeyError, ValueError):
            return False

    cands = sorted(Path(args.checkpoints).glob("policy-*"), key=lambda p: p.stat().st_mtime)
    cands = [c for c in cands if ".damaged-" not in c.name and ".tmp" not in c.name]
    cands = [c for c in cands if checkpoint.exists(c) and arithmetic(c)]
    if cands:
        return task, checkpoint.load(cands[-1]), cands[-1].name
    cfg = TransformerConfig(vocab_size=task.tokenizer.vocab_size, d_model=64, n_layers=2,
                            n_heads=4, d_ff=256,
                            max_len=task.max_prompt_len + task.max_solution_len)
    return task, LoadedModel.from_module(create(cfg)), "random-init (no cached policy)"


def bench_methods(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-method cost on the default task: wall time per generated token relative to
    best-of-N (the independent-sampling pool), useful/executed FLOP ratio, compilations.

    Every method runs with the exact oracle verifier (no reward-model cost, so the ratio isolates
    the search machinery: step-wise decode, scoring calls, selection gathers of both caches), on
    ``--method-problems`` problems at ``--method-n`` rows each, compile excluded (a warm-up run
    first), each timed ``--method-repeats`` times in interleaved rounds (the fastest call counts).
    The FLOP ratio is the whole ledger for best-of-N (prefill included) and the decode's for the
    search methods. Compilations are counted over the budget grid ``--method-grid`` run twice.
    """
    import jax
    import numpy as np

    from ttc import flops as F
    from ttc import registry as REG
    from ttc import rewards as R
    from ttc.decode import TRACE_COUNTS, SamplingParams, generate_solutions
    from ttc.ledger import pool_ledger
    from ttc.search.loop import SearchConfig, run_search

    search_methods = REG.names(REG.KIND_SEARCH)
    task, pol, name = _bench_policy(args)
    ps = task.problems(args.method_problems, seed=1234, split="test")
    n, sp = args.method_n, SamplingParams.make(1.0)
    oracle = R.RewardSpec(kind="oracle", window=task.max_step_len)
    rows: list[dict[str, Any]] = []

    def pool_run(nn, seed):
        return generate_solutions(pol.graphdef, pol.params, task, ps.prompts, ps.prompt_len,
                                  num_samples=nn, sampling=sp, key=jax.random.key(seed))

    def search_run(method, nn, seed):
        return run_search(pol.graphdef, pol.params, oracle, None, task, ps.prompts,
                          ps.prompt_len, ps.gold, cfg=SearchConfig(method=method),
                          num_samples=nn, sampling=sp, key=jax.random.key(seed))

    # every method is timed --method-repeats times, in interleaved rounds (so that a load
    # change on a shared machine hits all of them alike); the fastest call of each is reported
    runs = {"best_of_n": lambda seed: pool_run(n, seed)}
    runs.update({m: (lambda seed, m=m: search_run(m, n, seed)) for m in search_methods})
    outs = {m: f(0) for m, f in runs.items()}  # warm-up: compile excluded
    times: dict[str, list[float]] = {m: [] for m in runs}
    for _ in range(max(1, args.method_repeats)):
        for m, f in runs.items():
            t0 = time.perf_counter()
            outs[m] = f(1)
            times[m].append(time.perf_counter() - t0)

    def timing(m: str, tok: float) -> dict[str, Any]:
        t = min(times[m])
        return {"s_per_token": t / tok, "rel_to_bon": (t / tok) / base, "wall_s": t,
                "wall_s_median": float(np.median(times[m])), "repeats": len(times[m])}

    s = outs["best_of_n"]
    tok = float(s.useful_tokens.sum())
    led = pool_ledger(pol.cfg, s, ps, n)
    base = min(times["best_of_n"]) / tok
    rows.append({"section": "methods", "impl": "best_of_n", "policy": name, "N": n,
                 **timing("best_of_n", tok),
                 "useful_over_executed": led.total_useful / led.total_executed})
    for method in search_methods:
        res = outs[method]
        w = res.work.total()
        tok = float(w.dec_tokens + w.look_tokens)
        useful = (F.decode_useful(pol.cfg, w.dec_tokens, w.dec_ctx)
                  + F.decode_useful(pol.cfg, w.look_tokens, w.look_ctx))
        executed = F.decode_executed(pol.cfg, w.dec_steps + w.look_steps, res.cache_len)
        rows.append({"section": "methods", "impl": method, "policy": name, "N": n,
                     **timing(method, tok), "useful_over_executed": float(useful / executed)})
    # compilations over a budget grid, run twice (the second pass must add none)
    before = dict(TRACE_COUNTS)
    for _ in range(2):
        for nn in args.method_grid:
            pool_run(nn, 0)
            for method in ("beam", "particle"):
                search_run(method, nn, 0)
    compiles = {k: TRACE_COUNTS[k] - before.get(k, 0) for k in ("generate", "search")}
    for r in rows:
        r["compiles_over_grid_x2"] = compiles
        r["grid"] = list(args.method_grid)
    del np
    return rows


def bench_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Training throughput: SFT steps per second of the default policy (``conf/policy/tiny.yaml``
    on the default arithmetic task; ``--quick``: the quick size), batch ``--train-batch``, on
    one device alone and as two trainings side by side, one per device
    (:func:`ttc.parallel.side_by_side`, as the main job trains the policy and its verifier's LM).

    Both trainings run the same ``--train-steps`` pre-made batches from the same start; the
    batches' generation is timed apart (``datagen_s_per_step``: host Python, which the main job
    pays inside each step). Compile excluded (a warm-up pass first); ``--repeats`` interleaved
    rounds, the fastest call counts. ``speedup`` is two trainings' steps per second side by side
    over one training's alone (2.0 would be perfect scaling).
    """
    from ttc.parallel import pinned, side_by_side
    from ttc.tasks import make_task
    from ttc.train import TrainConfig, lm_loss, make_optimizer, sequences, train_step

    task = make_task("arithmetic")
    width = task.max_prompt_len + task.max_solution_len
    size = QUICK_SIZES[0] if args.quick else KNOWN_SIZES[0]
    cfg = dataclasses.replace(size.ttc_config(width), vocab_size=task.tokenizer.vocab_size)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    batches = [sequences(task, task.problems(args.train_batch, seed=int(rng.integers(2**31)),
                                             split="train"), width)
               for _ in range(args.train_steps)]
    datagen = (time.perf_counter() - t0) / args.train_steps
    tx = make_optimizer(TrainConfig())

    def trainer(device: jax.Device) -> Callable[[], None]:
        with pinned(device):
            graphdef, params = nnx.split(create(cfg, seed=0), nnx.Param)
            state = [params, tx.init(params)]
            on_device = [tuple(jnp.asarray(x) for x in b) for b in batches]

        def run() -> None:
            with pinned(device):
                p, o = state
                for b in on_device:
                    p, o, loss = train_step(graphdef, p, o, b, tx=tx, loss_fn=lm_loss)
                jax.block_until_ready(loss)
                state[:] = [p, o]
        return run

    devices = jax.local_devices()[:2]
    runs = [trainer(d) for d in devices]
    one = runs[0]
    pair = (lambda: side_by_side(runs)) if len(runs) > 1 else None
    one()
    if pair:
        pair()  # warm-up: compiles on every device
    times: dict[str, list[float]] = {"one_device": [], "side_by_side": []}
    for _ in range(max(1, args.repeats)):
        for name, f in (("one_device", one), ("side_by_side", pair)):
            if f is not None:
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    base = {"section": "train", "size": size.name, "batch": args.train_batch,
            "steps": args.train_steps, "width": width, "datagen_s_per_step": datagen,
            "n_params": sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(create(cfg),
                                                                                nnx.Param)))}
    one_sps = args.train_steps / min(times["one_device"])
    rows = [{**base, "impl": "one_device", "trainings": 1, "steps_per_s": one_sps,
             "s_per_step": 1 / one_sps, "repeats": len(times["one_device"])}]
    if pair is None:
        rows.append({**base, "impl": "side_by_side", "skipped": "one device: nothing to pair"})
    else:
        sps = 2 * args.train_steps / min(times["side_by_side"])
        rows.append({**base, "impl": "side_by_side", "trainings": 2, "steps_per_s": sps,
                     "s_per_step": 2 / sps, "speedup": sps / one_sps,
                     "repeats": len(times["side_by_side"])})
    return rows


# ---------------------------------------------------------------------------------------------
# Section: a real pretrained model (SmolLM2-135M-Instruct)
# ---------------------------------------------------------------------------------------------
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_DEFAULT = os.path.join("models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
GSM8K_TEST = os.path.join("..", "shared", "data", "gsm8k", "test.jsonl")
# the first GSM8K test question, used when the data file is absent
GSM8K_FALLBACK = ("Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every "
                  "morning and bakes muffins for her friends every day with four. She sells the "
                  "remainder at the farmers' market daily for $2 per fresh duck egg. How much in "
                  "dollars does she make every day at the farmers' market?")


def smollm2_path(arg: str | None) -> str:
    """The SmolLM2 GGUF to benchmark: ``--smollm2``, else ``$TTC_SMOLLM2`` (what the tests
    read), else :data:`SMOLLM2_DEFAULT` under the repository root."""
    path = arg or os.environ.get("TTC_SMOLLM2") or os.path.join(REPO_ROOT, SMOLLM2_DEFAULT)
    return os.path.abspath(os.path.expanduser(path))


def gsm8k_question() -> tuple[str, str]:
    """The first question of the GSM8K test file (``../shared/data/gsm8k/test.jsonl`` from the
    repository root) and where it came from (the file, or ``builtin`` when it is absent)."""
    path = os.path.normpath(os.path.join(REPO_ROOT, GSM8K_TEST))
    try:
        with open(path) as f:
            return json.loads(f.readline())["question"], path
    except (OSError, ValueError, KeyError):
        return GSM8K_FALLBACK, "builtin"


def chat_prompt(tokenizer: Any, question: str) -> np.ndarray:
    """``question`` as one user turn through the tokenizer's chat template (generation prompt
    added), as ``int64`` token ids."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                        add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return np.asarray(ids, np.int64)


def _load_hf_gguf(transformers: Any, torch: Any, path: str) -> Any:
    """transformers' own Llama read from the same GGUF file, in float32, eval mode."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()


def _real_ttc_runner(policy: Any, batch: int, prompt: np.ndarray, new_tokens: int,
                     devices: int) -> tuple[Callable[[], Any], float]:
    """A blocking call that samples ``new_tokens`` tokens for ``batch`` copies of ``prompt``
    with the loaded policy (:func:`make_ttc_decode`), and its useful FLOPs (the ledger: one
    prefill per device plus every generated token at its own context)."""
    lp = len(prompt)
    run = make_ttc_decode(policy.graphdef, policy.cfg, batch, lp, new_tokens, devices)
    prompt_j = jnp.asarray(prompt, jnp.int32)
    sp = SamplingParams.make(temperature=1.0)
    keys = iter(jax.random.split(jax.random.key(1), 1000))

    def call():
        tokens, useful = jax.block_until_ready(run(policy.params, prompt_j, next(keys), sp))
        if not (np.asarray(useful) == new_tokens).all() or tokens.shape != (batch, lp + new_tokens):
            raise RuntimeError("ttc decode did not generate exactly new_tokens tokens per row")
        return tokens

    cfg = policy.cfg
    fl = devices * float(ttc_flops.prefill_useful(cfg, lp)) + float(ttc_flops.decode_useful(
        cfg, batch * new_tokens, batch * sum(lp + i + 1 for i in range(new_tokens))))
    return call, fl


def _real_hf_runner(torch: Any, model: Any, batch: int, prompt: np.ndarray,
                    new_tokens: int) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    """HF ``generate`` (sampling, exactly ``new_tokens`` new tokens) as a blocking call, its
    warm-up (4 new tokens: there is nothing to compile) and its useful FLOPs."""
    ids = torch.as_tensor(np.tile(prompt[None], (batch, 1)), dtype=torch.long)
    mask = torch.ones_like(ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def call(n: int = new_tokens):
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                                 min_new_tokens=n, pad_token_id=pad)
        if tuple(out.shape) != (batch, len(prompt) + n):
            raise RuntimeError(f"HF generate returned shape {tuple(out.shape)}")
        return out

    cfg = model.config
    fl = _useful_flops(_hf_matmul_params(torch, model), cfg.num_hidden_layers, cfg.hidden_size,
                       batch, len(prompt), new_tokens)
    return call, (lambda: call(min(4, new_tokens))), fl


def _interleaved(calls: dict[str, Callable[[], Any]], warmups: dict[str, Callable[[], Any]],
                 rounds: int) -> dict[str, dict[str, float]]:
    """Times every call once per round, the calls alternating (a load change on a shared
    machine hits all alike), after one untimed warm-up each. Returns per name
    ``{warmup_s, best_s, median_s, repeats}``."""
    stats: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for name in calls:
        t0 = time.perf_counter()
        warmups.get(name, calls[name])()
        stats[name] = {"warmup_s": time.perf_counter() - t0}
    for _ in range(max(1, rounds)):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        stats[name].update(best_s=min(ts), median_s=statistics.median(ts), repeats=len(ts))
    return stats


def _real_models(args: argparse.Namespace, path: str) -> tuple[Any, Any, Any, str | None]:
    """ttc's :class:`ttc.hub.HubModel` of ``path``, and (unless skipped) torch and the HF model
    of the same file; the reason when HF is skipped."""
    import ttc.hub

    t0 = time.perf_counter()
    hub = ttc.hub.load(path)
    print(f"# real: ttc.hub.load {time.perf_counter() - t0:.1f} s", flush=True)
    if args.skip_hf:
        return hub, None, None, "skipped: disabled by --skip-hf"
    try:
        torch, transformers = load_hf()
    except ImportError:
        return hub, None, None, HF_SKIP_REASON
    t0 = time.perf_counter()
    model = _load_hf_gguf(transformers, torch, path)
    print(f"# real: transformers from_pretrained(gguf_file=) {time.perf_counter() - t0:.1f} s",
          flush=True)
    return hub, torch, model, None


def bench_real(args: argparse.Namespace) -> list[dict[str, Any]]:
    """SmolLM2-135M-Instruct (``--smollm2``): ttc's jitted prefill + decode with the loaded
    weights against HF ``generate`` on the same file, the same chat-templated GSM8K prompt and
    the same batch and new tokens (``--real-batch``, ``--real-new-tokens``), timed in
    ``--real-rounds`` interleaved rounds after a warm-up each. ttc runs on each device count of
    ``--real-devices`` (rows ``ttc``, then ``ttc-<k>dev``, left out where the batch does not
    split evenly over ``k``; the first count falls back to one device there).

    Returns:
        One row per (batch, impl) with tokens/s, useful GFLOP/s and their fraction of the
        matmul peak; HF rows carry ``ttc_over_impl``. A single ``skipped`` row when the model
        file is missing.
    """
    path = smollm2_path(args.smollm2)
    if not os.path.isfile(path):
        row = {"section": "real", "impl": "ttc", "path": path,
               "skipped": f"skipped: no SmolLM2 GGUF at {path} (set --smollm2 or $TTC_SMOLLM2)"}
        print(f"# real: {row['skipped']}", flush=True)
        return [row]
    hub, torch, hf_model, hf_skip = _real_models(args, path)
    question, source = gsm8k_question()
    prompt = chat_prompt(hub.tokenizer, question)
    if torch is not None:
        torch.set_num_threads(args.hf_threads[0])
    peak = getattr(args, "peak_gflops", None)
    cfg = hub.cfg
    base = {"section": "real", "model": os.path.basename(path), "prompt_source": source,
            "prompt_len": len(prompt), "new_tokens": args.real_new_tokens,
            "n_params": cfg.n_params, "matmul_params": cfg.matmul_params}
    rows: list[dict[str, Any]] = []
    for batch in args.real_batch:
        calls, warmups, flops, devs = {}, {}, {}, {}
        counts = dict.fromkeys(min(d, args.devices) for d in args.real_devices)
        for i, d in enumerate(counts):
            impl = "ttc" if i == 0 else f"ttc-{d}dev"
            if i and batch % d:
                continue  # it would run on one device: a repeat of the first row, or skipped
            devs[impl] = d if batch % d == 0 else 1
            calls[impl], flops[impl] = _real_ttc_runner(hub.policy, batch, prompt,
                                                        args.real_new_tokens, devs[impl])
        if hf_model is not None:
            calls["hf"], warmups["hf"], flops["hf"] = _real_hf_runner(
                torch, hf_model, batch, prompt, args.real_new_tokens)
        load = os.getloadavg()[0]
        stats = _interleaved(calls, warmups, args.real_rounds)
        out = {}
        for impl, st in stats.items():
            extra = ({"devices": devs[impl], "threads": usable_cores()} if impl in devs
                     else {"devices": 1, "threads": args.hf_threads[0]})
            out[impl] = _finish_row({"impl": impl, "load1": load, "useful_flops": flops[impl],
                                     **extra, **st}, {**base, "batch": batch}, batch,
                                    args.real_new_tokens, peak)
        if "hf" in out:
            out["hf"]["ttc_over_impl"] = out["ttc"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
        else:
            out["hf"] = {**base, "batch": batch, "impl": "hf", "skipped": hf_skip}
        for row in out.values():
            rows.append(row)
            _print_real_row(row)
    return rows


REAL_TARGETS = {"batch": 64, "ttc_over_hf": 3.0, "frac_peak": 0.5}
"""The issue's targets for the real model: ttc >= 3x HF at batch 64, useful GFLOP/s >= 50% of
the matmul peak."""


def _print_real_row(row: dict[str, Any]) -> None:
    head = f"{row.get('batch', ''):>6} {row['impl']:<9}"
    if row.get("skipped"):
        print(f"{head} {row['skipped']}", flush=True)
        return
    frac, ratio = row.get("frac_peak"), row.get("ttc_over_impl")
    print(f"{head} {row['devices']:>3} {row['threads']:>3} {row['tokens_per_s']:>9.1f} "
          f"{row['tokens_per_s_median']:>9.1f} {row['gflops_useful']:>8.2f} "
          f"{(f'{100 * frac:.1f}' if frac else '-'):>6} {(f'{ratio:.2f}x' if ratio else '-'):>7} "
          f"{row['best_s']:>8.2f} {row['median_s']:>8.2f} {row['warmup_s']:>8.2f} "
          f"{row['load1']:>5.2f}", flush=True)


def _print_real(rows: list[dict[str, Any]]) -> None:
    """The real-model table and whether the targets (:data:`REAL_TARGETS`) are met."""
    if not rows:
        return
    done = [r for r in rows if not r.get("skipped")]
    r0 = done[0] if done else rows[0]
    print(f"\nreal model {r0.get('model', '-')}: prompt {r0.get('prompt_len', '-')} tokens "
          f"(GSM8K, chat template; {r0.get('prompt_source', '-')}), "
          f"{r0.get('new_tokens', '-')} new tokens per row, sampling at temperature 1; best and "
          "median of the interleaved rounds")
    print(f"{'batch':>6} {'impl':<9} {'dev':>3} {'thr':>3} {'tok/s':>9} {'median':>9} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'ttc/HF':>7} {'best s':>8} {'median s':>8} "
          f"{'warmup s':>8} {'load':>5}")
    for r in rows:
        _print_real_row(r)
    t = REAL_TARGETS
    at = {r["impl"]: r for r in done if r["batch"] == t["batch"]}
    if "ttc" in at:
        frac = at["ttc"]["frac_peak"] or 0.0

        def verdict(ok: bool) -> str:
            return "met" if ok else "not met"

        line = (f"targets at batch {t['batch']}: useful GFLOP/s {100 * frac:.1f}% of peak "
                f"(target {100 * t['frac_peak']:.0f}%: {verdict(frac >= t['frac_peak'])})")
        if "ttc_over_impl" in at.get("hf", {}):
            ratio = at["hf"]["ttc_over_impl"]
            line += (f"; ttc/HF {ratio:.2f}x (target {t['ttc_over_hf']:.0f}x: "
                     f"{verdict(ratio >= t['ttc_over_hf'])})")
        print(line)


Section = Callable[[argparse.Namespace], list[dict[str, Any]]]
SECTIONS: dict[str, Section] = {
    "decode": bench_decode,
    "methods": bench_methods,
    "train": bench_train,
    "real": bench_real,
}
"""Bench sections in run order: name -> ``fn(args) -> rows``. Add a section by adding an entry."""


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
_HEADER = (f"{'size':<12} {'batch':>6} {'impl':<9} {'thr':>3} {'tokens/s':>11} {'GFLOP/s':>8} "
           f"{'%peak':>6} {'ttc/impl':>8} {'best s':>8} {'median s':>8} {'warmup s':>8} "
           f"{'load':>5} {'RSS MiB':>8}")


def _print_row(row: dict[str, Any]) -> None:
    if row.get("section") != "decode":
        return  # other sections print their own table at the end
    head = f"{row['size']:<12} {row['batch']:>6} {row['impl']:<9} {row.get('threads', ''):>3}"
    if row.get("skipped"):
        print(f"{head} {row['skipped']}", flush=True)
        return
    frac = row.get("frac_peak")
    ratio = row.get("ttc_over_impl")
    print(
        f"{head} {row['tokens_per_s']:>11,.0f} {row['gflops_useful']:>8.2f} "
        f"{(f'{100 * frac:.1f}' if frac else '-'):>6} {(f'{ratio:.2f}x' if ratio else '-'):>8} "
        f"{row['best_s']:>8.3f} {row['median_s']:>8.3f} {row['warmup_s']:>8.2f} "
        f"{row['load1']:>5.2f} {row['peak_rss_mb']:>8.0f}",
        flush=True,
    )


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, batch): ttc tokens/s against each HF model's best thread count.

    Args:
        rows: the ``decode`` section's rows.

    Returns:
        One dict per (size, batch) with ``ttc_tokens_per_s`` and, for each HF model that ran,
        ``<impl>_tokens_per_s``, ``<impl>_threads`` and ``ttc_over_<impl>``.
    """
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r.get("section") != "decode" or r.get("skipped"):
            continue
        s = out.setdefault((r["size"], r["batch"]), {"size": r["size"], "batch": r["batch"]})
        if r["impl"] == "ttc":
            s["ttc_tokens_per_s"] = r["tokens_per_s"]
            s["ttc_frac_peak"] = r["frac_peak"]
            s["ttc_devices"] = r["devices"]
        elif r["impl"].startswith("ttc-"):
            s["ttc_1dev_tokens_per_s"] = r["tokens_per_s"]
        elif r["tokens_per_s"] > s.get(f"{r['impl']}_tokens_per_s", 0.0):
            s[f"{r['impl']}_tokens_per_s"] = r["tokens_per_s"]
            s[f"{r['impl']}_threads"] = r.get("threads")
    for s in out.values():
        for impl in ("hf-llama", "hf-gpt2"):
            if f"{impl}_tokens_per_s" in s and "ttc_tokens_per_s" in s:
                s[f"ttc_over_{impl}"] = s["ttc_tokens_per_s"] / s[f"{impl}_tokens_per_s"]
    return list(out.values())


def _print_methods(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\nmethods on {r0['policy']}, N={r0['N']} (oracle verifier; compile excluded)")
    print(f"{'method':<12} {'s/token':>10} {'vs best-of-N':>12} {'useful/executed':>16} "
          f"{'wall s (min / median of ' + str(r0['repeats']) + ')':>28}")
    for r in rows:
        print(f"{r['impl']:<12} {r['s_per_token']:>10.2e} {r['rel_to_bon']:>11.2f}x "
              f"{r['useful_over_executed']:>16.2f} {r['wall_s']:>13.3f} / {r['wall_s_median']:.3f}")
    print(f"compilations over budgets {r0['grid']} run twice: {r0['compiles_over_grid_x2']}")


def _print_train(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\ntraining {r0['size']} ({r0['n_params']:,} parameters), batch {r0['batch']} x "
          f"{r0['width']} tokens, {r0['steps']} steps (compile and batch generation excluded; "
          f"generation: {1000 * r0['datagen_s_per_step']:.1f} ms per step)")
    print(f"{'impl':<14} {'trainings':>9} {'steps/s':>9} {'s/step':>8} {'speedup':>8}")
    for r in rows:
        if r.get("skipped"):
            print(f"{r['impl']:<14} {r['skipped']}")
            continue
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        print(f"{r['impl']:<14} {r['trainings']:>9} {r['steps_per_s']:>9.2f} "
              f"{r['s_per_step']:>8.3f} {sp:>8}")


def _print_summary(summary: list[dict[str, Any]]) -> None:
    if not summary:
        return
    print(f"\n{'size':<12} {'batch':>6} {'ttc tok/s':>11} {'1 device':>11} {'llama tok/s':>12} "
          f"{'ttc/llama':>9} {'gpt2 tok/s':>11} {'ttc/gpt2':>9}   (HF: best thread count)")
    for s in summary:
        def cell(key: str, width: int, fmt: str, s: dict[str, Any] = s) -> str:
            return f"{format(s[key], fmt):>{width}}" if key in s else f"{'-':>{width}}"

        print(f"{s['size']:<12} {s['batch']:>6} {cell('ttc_tokens_per_s', 11, ',.0f')} "
              f"{cell('ttc_1dev_tokens_per_s', 11, ',.0f')} "
              f"{cell('hf-llama_tokens_per_s', 12, ',.0f')} {cell('ttc_over_hf-llama', 8, '.2f')}x "
              f"{cell('hf-gpt2_tokens_per_s', 11, ',.0f')} {cell('ttc_over_hf-gpt2', 8, '.2f')}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch sizes (rows); default 256 1024 (quick: 8)")
    p.add_argument("--new-tokens", type=int, default=None, help="new tokens per row (default 64)")
    p.add_argument("--prompt-len", type=int, default=None, help="shared prompt length (16)")
    p.add_argument("--repeats", type=int, default=None, help="most timed repeats (default 3)")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="stop repeating a measurement once its timed calls took this long")
    p.add_argument("--sizes", nargs="+", default=None,
                   help=f"size names among {[s.name for s in KNOWN_SIZES]} "
                        f"(default: {' '.join(DEFAULT_SIZES)})")
    p.add_argument("--sections", nargs="+", default=None, choices=list(SECTIONS),
                   help="sections to run (default: all; --quick: all but 'real')")
    p.add_argument("--hf-threads", type=int, nargs="+", default=None,
                   help="torch.set_num_threads for HF, one measurement each (default: all cores)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size for the peak (2048)")
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "inherit"],
                   help="OMP_WAIT_POLICY for torch, set before it is imported (default PASSIVE: "
                        "spinning OpenMP threads stall for seconds when other processes share "
                        "the cores; 'inherit' leaves the environment alone)")
    p.add_argument("--host-devices", default="auto",
                   help="JAX CPU devices ttc shards rows over (ttc.parallel; default auto: one "
                        "per usable core, as ttc-run); a ttc row on one device is added")
    p.add_argument("--skip-hf", action="store_true", help="do not run the HF baselines")
    p.add_argument("--quick", action="store_true", help="tiny sizes and batches (seconds)")
    p.add_argument("--method-n", type=int, default=16, help="rows per problem (methods section)")
    p.add_argument("--method-problems", type=int, default=64, help="problems (methods section)")
    p.add_argument("--method-repeats", type=int, default=3,
                   help="timed calls per method, interleaved (methods section)")
    p.add_argument("--method-policy", default=None,
                   help="policy directory under --checkpoints for the methods section "
                        "(default: the newest arithmetic-task policy)")
    p.add_argument("--method-grid", type=int, nargs="+", default=[2, 8, 32],
                   help="budgets whose compilations are counted (methods section)")
    p.add_argument("--train-batch", type=int, default=None,
                   help="sequences per training step (train section; default 128, as the main job)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="timed steps per training call (train section; default 20)")
    p.add_argument("--smollm2", default=None,
                   help="SmolLM2-135M-Instruct GGUF for the real section (default: "
                        f"$TTC_SMOLLM2, else {SMOLLM2_DEFAULT} under the repository root)")
    p.add_argument("--real-batch", type=int, nargs="+", default=[1, 16, 64],
                   help="batch sizes of the real section (default 1 16 64)")
    p.add_argument("--real-new-tokens", type=int, default=64,
                   help="new tokens per row in the real section (default 64)")
    p.add_argument("--real-devices", type=int, nargs="+", default=[1],
                   help="JAX devices ttc splits the real section's rows over, one ttc row each "
                        "(default 1: every device reads all the weights at every step, so on "
                        "this CPU one device is faster for a 135M model; at most --host-devices)")
    p.add_argument("--real-rounds", type=int, default=2,
                   help="timed rounds of the real section, ttc and HF interleaved (default 2)")
    p.add_argument("--checkpoints", default="checkpoints", help="where cached policies live")
    p.add_argument("--out", default="bench.json", help="where to write the JSON report")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or ([8] if q else [256, 1024])
    args.new_tokens = args.new_tokens or (8 if q else 64)
    args.prompt_len = args.prompt_len or (4 if q else 16)
    args.repeats = args.repeats or (1 if q else 3)
    args.matmul_n = args.matmul_n or (256 if q else 2048)
    args.train_batch = args.train_batch or (16 if q else 128)
    args.train_steps = args.train_steps or (3 if q else 20)
    # the real model takes a minute to load and compile: quick runs it only when asked to
    args.sections = args.sections or [n for n in SECTIONS if not (q and n == "real")]
    if q:
        args.sizes = list(QUICK_SIZES)
        args.method_n, args.method_problems, args.method_grid = 4, 8, [2, 4]
        args.method_repeats = 1
    else:
        known = {s.name: s for s in KNOWN_SIZES}
        names = args.sizes or list(DEFAULT_SIZES)
        bad = [n for n in names if n not in known]
        if bad:
            p.error(f"unknown size(s) {bad}; choose among {list(known)}")
        args.sizes = [known[n] for n in names]
    args.hf_threads = args.hf_threads or [usable_cores()]
    for f in ("new_tokens", "prompt_len", "repeats", "matmul_n", "train_batch",
              "train_steps", "real_new_tokens", "real_rounds"):
        if getattr(args, f) < 1:
            p.error(f"--{f.replace('_', '-')} must be positive")
    if min(args.batch + args.hf_threads + args.real_batch + args.real_devices) < 1:
        p.error("--batch, --real-batch, --real-devices and --hf-threads must be positive")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the selected sections, prints a table and writes the JSON report.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The report that was written to ``--out``.
    """
    args = parse_args(argv)
    t_start = time.perf_counter()
    try:
        args.devices = configure_host_devices(args.host_devices)
    except ValueError as e:
        raise SystemExit(f"bench.py: {e}") from None
    if args.omp_wait_policy != "inherit":
        if "torch" in sys.modules:
            print("# note: torch already imported, --omp-wait-policy has no effect", flush=True)
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    machine = machine_info()
    print(f"# {machine['cpu_model']}, {machine['usable_cores']} cores, jax {machine['jax']}, "
          f"torch {machine['torch'] or '-'}, transformers {machine['transformers'] or '-'}; "
          f"load average {machine['loadavg_start'][0]:.2f}", flush=True)
    peaks = {"jax": measure_jax_matmul_peak(args.matmul_n, repeats=2 if args.quick else 5)}
    if not args.skip_hf:
        try:
            torch, _ = load_hf()
            torch.set_num_threads(args.hf_threads[0])
            peaks["torch"] = measure_torch_matmul_peak(torch, args.matmul_n,
                                                       repeats=2 if args.quick else 5)
        except ImportError:
            pass
    args.peak_gflops = peaks["jax"]["gflops"]
    print("# f32 matmul peak ({}x{}): {}".format(
        args.matmul_n, args.matmul_n,
        ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s" for k, v in peaks.items())), flush=True)
    if "decode" in args.sections:
        print(f"# prompt {args.prompt_len} tokens (shared), {args.new_tokens} new tokens per "
              f"row, sampling at temperature 1; best of <= {args.repeats} after a warm-up",
              flush=True)
        print(_HEADER, flush=True)
    sections: dict[str, list[dict[str, Any]]] = {}
    for name in args.sections:
        sections[name] = SECTIONS[name](args)
    machine["loadavg_end"] = list(os.getloadavg())
    summary = summarize(sections.get("decode", []))
    _print_summary(summary)
    _print_methods(sections.get("methods", []))
    _print_train(sections.get("train", []))
    _print_real(sections.get("real", []))
    report = {
        "command": " ".join([os.path.basename(sys.argv[0]) or "bench.py", *(argv or sys.argv[1:])]),
        "machine": machine,
        "args": {k: (v if k != "sizes" else [dataclasses.asdict(s) for s in v])
                 for k, v in vars(args).items()},
        "matmul_peak": peaks,
        "peak_gflops": args.peak_gflops,
        "sections": sections,
        "summary": summary,
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - t_start,
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=str)
    print(f"# peak RSS {report['peak_rss_mb']:.0f} MiB; wall {report['wall_s']:.1f} s; "
          f"load average at end {machine['loadavg_end'][0]:.2f}"
          + (f"; wrote {args.out}" if args.out else ""), flush=True)
    return report


if __name__ == "__main__":
    main()
