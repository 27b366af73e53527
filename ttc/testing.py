"""Helpers shared by the test suite (importable from any test module, unlike ``tests/*``,
which is not a package)."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ttc.decode import SamplingParams
from ttc.rewards import EPS
from ttc.search.loop import SearchConfig, init_search, propose_and_score


def run_search_steps(policy, spec, rparams, task, ps, n: int, key, steps: int):
    """Runs the search loop's propose+score ``steps`` times without any selection.

    Args:
        policy: the policy (a :class:`ttc.checkpoint.LoadedModel`).
        spec: the :class:`ttc.rewards.RewardSpec` scoring each step.
        rparams: the reward model's parameters (``None`` for the oracle).
        task: the task; ``ps`` its problem set.
        n: rows per problem.
        key: PRNG key.
        steps: how many propose+score calls.

    Returns:
        The final search state and, per call, ``(moved, last score, length)`` as NumPy arrays of
        shape ``[len(ps) * n]``.
    """
    cache_len = task.max_prompt_len + task.max_solution_len
    gold_rows = jnp.repeat(jnp.asarray(ps.gold), n, axis=0)
    pol = (policy.graphdef, policy.params, rparams, gold_rows)
    s = init_search(pol, spec, task, jnp.asarray(ps.prompts), jnp.asarray(ps.prompt_len), key,
                    n=n, cache_len=cache_len)
    step = jax.jit(functools.partial(propose_and_score, pol, spec, task,
                                     SearchConfig(method="beam")))
    seen = []
    for _ in range(steps):
        s = step(s, SamplingParams.make(1.0))
        seen.append((np.asarray(s.moved), np.asarray(s.last), np.asarray(s.dec.length)))
    return s, seen


def check_step_scores(seen, tokens, full_probs, tokenizer, *, atol: float = 1e-4) -> int:
    """Asserts that every incremental step score in ``seen`` (from :func:`run_search_steps`)
    equals the full-forward probability ``full_probs[row, position]`` at that step's last token
    (a step delimiter or ``EOS``), clipped as the search clips scores; returns how many were
    checked."""
    tokens = np.asarray(tokens)
    checked = 0
    for moved, last, length in seen:
        for b in np.flatnonzero(moved):
            pos = length[b] - 1
            if int(tokens[b, pos]) in (tokenizer.step_id, tokenizer.EOS):
                ref = np.clip(full_probs[b, pos], EPS, 1 - EPS)
                assert abs(last[b] - ref) < atol, (b, pos, last[b], ref)
                checked += 1
    return checked


def check_prefix_matches_steps(task, ps, solutions, *, width: int | None = None) -> list[bool]:
    """Asserts that ``task.prefix_correct`` (jitted) agrees with ``task.check_steps`` at every
    step boundary of each decoded solution in ``solutions`` (one per problem of ``ps``): the
    prefix ending at step ``k``'s delimiter (or ``EOS`` for the last step) is correct iff step
    ``k``'s verdict is. Returns the verdicts checked."""
    from ttc.tasks.base import pad_to

    tok = task.tokenizer
    width = width or task.max_prompt_len + task.max_solution_len + 4
    rows, plens, lens, golds, expected = [], [], [], [], []
    for i, sol in enumerate(solutions):
        verdicts = task.check_steps(i, ps, sol)
        steps = sol.split(tok.step_delimiter)
        for k in range(len(steps)):
            last = k == len(steps) - 1
            prefix = tok.step_delimiter.join(steps[: k + 1]) + ("" if last else tok.step_delimiter)
            ids = [*ps.prompts[i, : ps.prompt_len[i]], *tok.encode(prefix)] + ([tok.EOS] if last
                                                                               else [])
            if len(ids) > width:
                continue
            rows.append(ids)
            plens.append(ps.prompt_len[i])
            lens.append(len(ids))
            golds.append(ps.gold[i])
            expected.append(verdicts[k])
    ok = jax.jit(task.prefix_correct)(
        jnp.asarray(pad_to(rows, width)), jnp.asarray(np.array(plens, np.int32)),
        jnp.asarray(np.array(lens, np.int32)), jnp.asarray(np.stack(golds)))
    np.testing.assert_array_equal(np.asarray(ok), np.array(expected))
    return expected


def check_problems_deterministic(task, n: int = 80) -> None:
    """Asserts that ``task.problems`` is deterministic in its seed, differs across seeds and
    draws ``n`` distinct problems."""
    a = task.problems(n, seed=3, split="train")
    b = task.problems(n, seed=3, split="train")
    c = task.problems(n, seed=4, split="train")
    assert a.texts == b.texts
    np.testing.assert_array_equal(a.gold, b.gold)
    assert a.texts != c.texts
    assert len(set(a.texts)) == n


def check_main_job_on_task(tmp_path, name: str, sizes: list[str]) -> None:
    """``ttc-run task=NAME`` end to end at tiny sizes (``sizes``: the task's overrides, giving
    difficulties 2 and 3): the config schema, training, pool methods and oracle search run on
    the task and write sane records (verifier-free and oracle methods, no reward model)."""
    from hydra import compose, initialize_config_dir

    from ttc.cli.common import CONF_DIR, VERSION_BASE
    from ttc.cli.run import run

    methods = ("methods=[{name:single},{name:majority},{name:coverage},"
               "{name:beam,label:beam_oracle,reward:oracle,beam_width:2},"
               "{name:particle,label:pf_oracle,reward:oracle}]")
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        cfg = compose("config", overrides=[
            f"task={name}", *sizes, "policy.d_model=32", "policy.d_ff=64", "train.steps=30",
            "train.eval_every=15", "train.eval_problems=16", "train.batch_size=32",
            "eval.n_problems=12", "budgets=[1,4]", "search_budgets=[4]", "progress=false",
            methods, f"out_dir={tmp_path}/run", f"cache_dir={tmp_path}/ckpt",
            "compilation_cache=false"])
        res = run(cfg)
    by = {(r["method"], r["budget"]): r for r in res.records}
    assert set(by) == {("single", 1), ("majority", 1), ("majority", 4), ("coverage", 1),
                       ("coverage", 4), ("beam_oracle", 4), ("pf_oracle", 4)}
    for r in res.records:
        assert r["config"]["task"]["name"] == name
        assert 0 <= r["accuracy"] <= 1 and r["flops_useful"] > 0
        assert set(r["by_difficulty"]) <= {"2", "3"}
    assert by[("coverage", 4)]["accuracy"] >= by[("majority", 4)]["accuracy"]


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
"""The repository's ``scripts/`` (a source checkout; scripts are not installed)."""


def load_script(name: str) -> types.ModuleType:
    """Imports ``scripts/<name>.py`` as the module ``ttc_scripts_<name>`` (registered in
    ``sys.modules``: dataclasses look their module up while a class is built)."""
    spec = importlib.util.spec_from_file_location(f"ttc_scripts_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
