"""Resampling schemes and effective sample size for particle filtering.

All functions take log-weights ``[..., N]`` (unnormalised; ``-inf`` allowed) and work under
``jit``/``vmap``. A group whose log-weights are all non-finite (every particle scored NaN/-inf)
falls back to uniform weights, so a search never crashes nor produces NaN on bad scores.

Schemes (Douc & Cappé 2005, "Comparison of resampling schemes for particle filtering"): every
one is unbiased — the expected number of offspring of particle ``i`` is ``N * w_i``:

* ``multinomial``: N i.i.d. categorical draws;
* ``stratified``: one uniform draw in each of the N strata ``[i/N, (i+1)/N)``;
* ``systematic``: one uniform offset shared by all strata (lowest variance, not independent);
* ``residual``: ``floor(N w_i)`` deterministic copies, the remainder drawn multinomially from the
  residual weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

SCHEMES = ("multinomial", "systematic", "stratified", "residual")


def normalize(log_weights: Float[Array, "... N"]) -> Float[Array, "... N"]:
    """Normalised weights; NaN counts as ``-inf``; an all-invalid group becomes uniform."""
    lw = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    lw = jnp.minimum(lw, 1e30)  # +inf: those particles share all the mass
    ok = jnp.any(jnp.isfinite(lw), axis=-1, keepdims=True)
    return jax.nn.softmax(jnp.where(ok, lw, 0.0), axis=-1)


def ess(log_weights: Float[Array, "... N"]) -> Float[Array, ...]:
    """Effective sample size ``(sum w)^2 / sum w^2``, computed in log space (stable for extreme
    weights); ``N`` for an all-invalid group (uniform fallback)."""
    w = normalize(log_weights)
    return 1.0 / jnp.sum(w * w, axis=-1)


def _from_uniforms(w, u):
    """Indices of the positions ``u`` (sorted in [0,1)) in the CDF of ``w`` (last axis)."""
    cdf = jnp.cumsum(w, axis=-1)
    cdf = cdf.at[..., -1].set(1.0 + 1e-6)
    idx = jax.vmap(jnp.searchsorted)(cdf.reshape(-1, cdf.shape[-1]), u.reshape(-1, u.shape[-1]))
    return jnp.minimum(idx.reshape(u.shape), w.shape[-1] - 1)


def resample(
    key: PRNGKeyArray, log_weights: Float[Array, "... N"], scheme: str = "systematic"
) -> Int[Array, "... N"]:
    """Ancestor indices ``[..., N]`` (into the last axis) drawn with ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose from {SCHEMES}")
    w = normalize(log_weights)
    n = w.shape[-1]
    batch = w.shape[:-1]
    i = jnp.arange(n, dtype=jnp.float32)
    if scheme == "multinomial":
        lw = jnp.log(jnp.maximum(w, 1e-38))
        lw = jnp.where(w > 0, lw, -jnp.inf)
        idx = jax.random.categorical(key, lw[..., None, :], axis=-1, shape=(*batch, n))
        return idx.astype(jnp.int32)
    if scheme == "systematic":
        u = (i + jax.random.uniform(key, (*batch, 1))) / n
        return _from_uniforms(w, u).astype(jnp.int32)
    if scheme == "stratified":
        u = (i + jax.random.uniform(key, (*batch, n))) / n
        return _from_uniforms(w, u).astype(jnp.int32)
    # residual
    nw = n * w
    counts = jnp.floor(nw + 1e-6).astype(jnp.int32)
    counts = jnp.minimum(counts, n)
    det = jax.vmap(lambda c: jnp.repeat(jnp.arange(n), c, total_repeat_length=n))(
        counts.reshape(-1, n)).reshape(*batch, n)
    n_det = jnp.sum(counts, axis=-1, keepdims=True)
    resid = jnp.maximum(nw - counts, 0.0)
    has_resid = jnp.sum(resid, -1, keepdims=True) > 0
    lr = jnp.where(resid > 0, jnp.log(jnp.maximum(resid, 1e-38)), -jnp.inf)
    lr = jnp.where(has_resid, lr, 0.0)
    extra = jax.random.categorical(key, lr[..., None, :], axis=-1, shape=(*batch, n))
    return jnp.where(i < n_det, det, extra).astype(jnp.int32)
