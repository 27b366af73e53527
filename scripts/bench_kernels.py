"""Micro-benchmarks behind two decode-path decisions in :mod:`ttc.models.transformer`.

Both run side by side in one process, inside a jitted decode-like loop (the cache is a loop
carry, as in :func:`ttc.decode.decode`), and are reported as time ratios:

(a) **KV-cache layout.** ``[B, H, T, Dh]`` (heads-major) with attention as two ``einsum`` batched
    matvecs, against ``[B, T, H, Dh]`` with attention as elementwise multiply-and-reduce over a
    ``[B, T, H, Dh]`` intermediate (and, for reference, ``[B, T, H, Dh]`` with ``einsum``). One
    decode step per loop iteration: write each row's new key/value at its own slot, mask, softmax,
    weighted sum. Default shape: ``B=2048, T=69, H=4, Dh=16`` (the default policy on the
    arithmetic task at N=2048 rows).

(b) **Cache container.** A tuple of per-layer ``(k, v)`` arrays against one stacked
    ``[L, B, H, T, Dh]`` array per k/v, updated with ``dynamic_update_slice`` inside a
    ``lax.while_loop`` (layers unrolled in Python), and against the stacked cache with a
    ``lax.scan`` over layers (the cache as scanned input and output).

Usage::

    python scripts/bench_kernels.py               # default shapes, about a minute on 2 cores
    python scripts/bench_kernels.py --steps 8 --repeats 3 --out kernels.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# one row's cache update at its own slot: c [..., T, Dh] (T second to last) <- u [..., 1, Dh]
_upd_bhtd = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, i, 0)))
_upd_bthd = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (i, 0, 0)))


def _softmax_masked(scores: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=axis)


# ---------------------------------------------------------------------------------------------
# (a) cache layout
# ---------------------------------------------------------------------------------------------
def attend_bhtd_einsum(q, kc, vc, k, v, pos):
    """Heads-major cache ``[B, H, T, Dh]``; einsum batched matvecs. ``q, k, v``: ``[B, H, Dh]``."""
    kc = _upd_bhtd(kc, k[:, :, None], pos)
    vc = _upd_bhtd(vc, v[:, :, None], pos)
    t = kc.shape[2]
    s = jnp.einsum("bhd,bhtd->bht", q, kc) / math.sqrt(q.shape[-1])
    p = _softmax_masked(s, (jnp.arange(t)[None, :] <= pos[:, None])[:, None, :], axis=-1)
    return jnp.einsum("bht,bhtd->bhd", p, vc), kc, vc


def attend_bthd_reduce(q, kc, vc, k, v, pos):
    """Time-major cache ``[B, T, H, Dh]``; multiply-and-reduce over a ``[B, T, H, Dh]`` product."""
    kc = _upd_bthd(kc, k[:, None], pos)
    vc = _upd_bthd(vc, v[:, None], pos)
    t = kc.shape[1]
    s = (q[:, None] * kc).sum(-1) / math.sqrt(q.shape[-1])  # [B, T, H]
    p = _softmax_masked(s, (jnp.arange(t)[None, :] <= pos[:, None])[:, :, None], axis=1)
    return (p[..., None] * vc).sum(1), kc, vc


def attend_bthd_einsum(q, kc, vc, k, v, pos):
    """Time-major cache ``[B, T, H, Dh]``; einsum (XLA picks the transposes)."""
    kc = _upd_bthd(kc, k[:, None], pos)
    vc = _upd_bthd(vc, v[:, None], pos)
    t = kc.shape[1]
    s = jnp.einsum("bhd,bthd->bht", q, kc) / math.sqrt(q.shape[-1])
    p = _softmax_masked(s, (jnp.arange(t)[None, :] <= pos[:, None])[:, None, :], axis=-1)
    return jnp.einsum("bht,bthd->bhd", p, vc), kc, vc


LAYOUTS: dict[str, tuple[Callable, str]] = {
    "BHTD einsum (ttc)": (attend_bhtd_einsum, "bhtd"),
    "BTHD mul-reduce": (attend_bthd_reduce, "bthd"),
    "BTHD einsum": (attend_bthd_einsum, "bthd"),
}


def make_layout_loop(attend: Callable, steps: int) -> Callable:
    """A jitted loop of ``steps`` decode steps of ``attend``; each step's output feeds the next
    step's query/key/value, and rows write at their own (staggered) positions."""

    @jax.jit
    def run(q, kc, vc, pos0):
        def body(i, carry):
            q, kc, vc = carry
            out, kc, vc = attend(q, kc, vc, 0.5 * q, q, pos0 + i)
            return jnp.tanh(out + q), kc, vc

        return jax.lax.fori_loop(0, steps, body, (q, kc, vc))

    return run


# ---------------------------------------------------------------------------------------------
# (b) cache container
# ---------------------------------------------------------------------------------------------
def _qkv(x, w_qkv, h):
    b, d = x.shape
    return tuple(a.reshape(b, h, d // h) for a in jnp.split(x @ w_qkv, 3, axis=-1))


def _attend(q, kc, vc, pos):
    """Masked attention of ``q`` ``[B, H, Dh]`` over a heads-major cache (already written)."""
    t = kc.shape[2]
    s = jnp.einsum("bhd,bhtd->bht", q, kc) / math.sqrt(q.shape[-1])
    p = _softmax_masked(s, (jnp.arange(t)[None, :] <= pos[:, None])[:, None, :], axis=-1)
    return jnp.einsum("bht,bhtd->bhd", p, vc)


def _layer(x, w_qkv, w_o, kc, vc, pos, h):
    """One attention sub-layer on a heads-major cache (the ttc block minus the MLP)."""
    q, k, v = _qkv(x, w_qkv, h)
    kc = _upd_bhtd(kc, k[:, :, None], pos)
    vc = _upd_bhtd(vc, v[:, :, None], pos)
    return x + _attend(q, kc, vc, pos).reshape(x.shape) @ w_o, kc, vc


# write one row's new [H, Dh] entry into a stacked [L, H, T, Dh] row at (layer, :, pos, :)
_upd_stacked = jax.vmap(
    lambda c, u, layer, i: jax.lax.dynamic_update_slice(c, u, (layer, 0, i, 0)),
    in_axes=(1, 0, None, 0), out_axes=1,
)


def make_container_loop(kind: str, n_layers: int, n_heads: int, steps: int) -> Callable:
    """A jitted ``lax.while_loop`` of ``steps`` decode steps over ``n_layers`` layers whose cache
    is ``kind``: ``'tuple'`` (per-layer arrays), ``'stacked'`` (``[L, ...]`` arrays, layers
    unrolled, each new entry written into the stack with ``dynamic_update_slice``) or
    ``'stacked-scan'`` (``lax.scan`` over layers, the stack as scanned input and output)."""

    def step_tuple(x, ws, cache, pos):
        new = []
        for layer in range(n_layers):
            kc, vc = cache[layer]
            x, kc, vc = _layer(x, ws[0][layer], ws[1][layer], kc, vc, pos, n_heads)
            new.append((kc, vc))
        return x, tuple(new)

    def step_stacked(x, ws, cache, pos):
        ks, vs = cache
        for layer in range(n_layers):
            q, k, v = _qkv(x, ws[0][layer], n_heads)
            ks = _upd_stacked(ks, k[:, None, :, None], layer, pos)
            vs = _upd_stacked(vs, v[:, None, :, None], layer, pos)
            x = x + _attend(q, ks[layer], vs[layer], pos).reshape(x.shape) @ ws[1][layer]
        return x, (ks, vs)

    def step_scan(x, ws, cache, pos):
        def f(x, layer_in):
            w_qkv, w_o, kc, vc = layer_in
            x, kc, vc = _layer(x, w_qkv, w_o, kc, vc, pos, n_heads)
            return x, (kc, vc)

        x, cache = jax.lax.scan(f, x, (ws[0], ws[1], *cache))
        return x, cache

    step = {"tuple": step_tuple, "stacked": step_stacked, "stacked-scan": step_scan}[kind]

    @jax.jit
    def run(x, ws, cache, pos0):
        def cond(c):
            return c[0] < steps

        def body(c):
            i, x, cache = c
            x, cache = step(x, ws, cache, pos0 + i)
            return i + 1, jnp.tanh(x), cache

        _, x, cache = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, cache))
        return x, cache

    return run


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Best and median seconds of ``repeats`` calls after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return {"best_s": min(ts), "median_s": statistics.median(ts)}


def bench_layouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Section (a): one row per layout, ``ratio`` = its best time over the ttc layout's."""
    b, t, h, dh = args.batch, args.cache_len, args.heads, args.head_dim
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, h, dh)), jnp.float32)
    kv = rng.standard_normal((b, h, t, dh)).astype(np.float32)
    # staggered rows: positions t-steps-7 .. t-steps-1, so every step writes inside the cache
    pos0 = jnp.asarray(t - args.steps - 1 - (np.arange(b) % 8), jnp.int32)
    rows = []
    for name, (attend, layout) in LAYOUTS.items():
        c = jnp.asarray(kv if layout == "bhtd" else kv.transpose(0, 2, 1, 3))
        run = make_layout_loop(attend, args.steps)
        r = _time(lambda run=run, c=c: run(q, c, c + 1.0, pos0), args.repeats)
        rows.append({"name": name, "layout": layout, **r, "per_step_ms": 1e3 * r["best_s"] /
                     args.steps})
    base = rows[0]["best_s"]
    for r in rows:
        r["ratio"] = r["best_s"] / base
    return rows


def bench_containers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Section (b): one row per cache container, ``ratio`` = its best time over the tuple's."""
    b, t, h, dh, n_layers = args.batch, args.cache_len, args.heads, args.head_dim, args.layers
    d = h * dh
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((b, d)), jnp.float32)
    w_qkv = jnp.asarray(rng.standard_normal((n_layers, d, 3 * d)) / np.sqrt(d), jnp.float32)
    w_o = jnp.asarray(rng.standard_normal((n_layers, d, d)) / np.sqrt(d), jnp.float32)
    kv = jnp.asarray(rng.standard_normal((n_layers, b, h, t, dh)), jnp.float32)
    pos0 = jnp.asarray(t - args.steps - 1 - (np.arange(b) % 8), jnp.int32)
    caches = {
        "tuple": tuple((kv[i], kv[i] + 1.0) for i in range(n_layers)),
        "stacked": (kv, kv + 1.0),
        "stacked-scan": (kv, kv + 1.0),
    }
    rows = []
    for kind, cache in caches.items():
        run = make_container_loop(kind, n_layers, h, args.steps)
        r = _time(lambda run=run, cache=cache: run(x, (w_qkv, w_o), cache, pos0), args.repeats)
        rows.append({"name": kind, **r, "per_step_ms": 1e3 * r["best_s"] / args.steps})
    base = rows[0]["best_s"]
    for r in rows:
        r["ratio"] = r["best_s"] / base
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs both sections, prints their ratios and optionally writes JSON.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        ``{"args": ..., "layout": rows, "container": rows}``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--cache-len", type=int, default=69)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--layers", type=int, default=2, help="layers for section (b)")
    p.add_argument("--steps", type=int, default=16, help="decode steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="optional JSON output path")
    args = p.parse_args(argv)
    if args.cache_len < args.steps + 9:
        p.error("--cache-len must be at least --steps + 9")
    print(f"# B={args.batch} T={args.cache_len} H={args.heads} Dh={args.head_dim} "
          f"L={args.layers}; {args.steps} decode steps per call, best of {args.repeats}; "
          f"jax {jax.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    report: dict[str, Any] = {"args": vars(args)}
    for key, title, fn, ref in (
        ("layout", "(a) KV-cache layout, one decode step of attention", bench_layouts,
         "BHTD einsum (ttc)"),
        ("container", "(b) cache container in a while_loop decode", bench_containers, "tuple"),
    ):
        rows = fn(args)
        report[key] = rows
        print(f"\n{title}\n{'variant':<20} {'ms/step':>9} {'x ' + ref:>24}")
        for r in rows:
            print(f"{r['name']:<20} {r['per_step_ms']:>9.3f} {r['ratio']:>23.2f}x")
    report["loadavg_end"] = list(os.getloadavg())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
