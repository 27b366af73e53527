"""The public primitives exist under their documented names, as functions with the documented
leading parameters, and the resampling primitives give sensible values when called."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttc.metrics
import ttc.scaling
import ttc.search

# name -> leading positional parameters (further keyword-only options are allowed)
PRIMITIVES = {
    (ttc.search, "resample"): ["key", "log_weights", "scheme"],
    (ttc.search, "ess"): ["log_weights"],
    (ttc.search, "majority_vote"): ["answer_ids", "weights", "valid"],
    (ttc.search, "best_of_n"): ["scores", "valid"],
    (ttc.metrics, "pass_at_k"): ["n", "c", "k"],
    (ttc.metrics, "pareto_frontier"): ["points"],
    (ttc.scaling, "fit_power_law"): ["ks", "coverage"],
}


@pytest.mark.parametrize("module,name", list(PRIMITIVES), ids=lambda x: getattr(x, "__name__", x))
def test_primitive_is_a_function_with_the_documented_parameters(module, name):
    fn = getattr(module, name)
    assert inspect.isfunction(fn), f"{module.__name__}.{name} is {type(fn)}, not a function"
    params = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert params == PRIMITIVES[module, name]


def test_from_imports_give_the_functions():
    from ttc.search import best_of_n, ess, majority_vote, resample

    for fn in (best_of_n, ess, majority_vote, resample):
        assert callable(fn) and not inspect.ismodule(fn)
    assert set(ttc.search.SCHEMES) == {"multinomial", "systematic", "stratified", "residual"}


def test_resample_and_ess_shapes_and_values():
    lw = jnp.log(jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    for scheme in ttc.search.SCHEMES:
        idx = ttc.search.resample(jax.random.key(0), lw, scheme)
        assert idx.shape == (2, 4)
        np.testing.assert_array_equal(np.asarray(idx[1]), 0)  # all mass on particle 0
    np.testing.assert_allclose(np.asarray(ttc.search.ess(lw)), [4.0, 1.0], rtol=1e-6)
