"""Step-level search with a Hugging Face reward model (``reward=hf``, :mod:`ttc.search.scored`).

The policy is a tiny random Hugging Face Llama whose embeddings carry one constant direction
that its head reads for the step delimiter and ``EOS`` tokens, so that its solutions have
several steps (a plain random model almost never ends a step); the reward model is the tiny
random Qwen2.5-Math-PRM-style checkpoint of ``test_hub_reward`` with its own tokenizer.

Checked: every search method runs end to end from the command line with the PRM's FLOPs
charged; each final row's weight is the PRM's own score of that row's final text (so the
per-row caches followed every selection); the same seed gives the same rows; a lookahead
search charges its rollouts' scoring apart.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_hub_reward import FAST_COMPILE
from test_run_hf import _cfg, prm_dir, test_file, tiny_llama  # noqa: F401 (fixtures)

from ttc.cli.run import run
from ttc.decode import SamplingParams
from ttc.evaluate.sources import solution_steps
from ttc.hub.reward import load_reward
from ttc.rewards import EPS, RewardSpec, step_end_positions
from ttc.search import scored
from ttc.search.loop import SearchConfig, SearchParams
from ttc.tasks.stops import stop_rule

NEWLINE, EOS = 0.8, 0.45
"""Head weights on the constant direction: ``"\n"`` often (two in a row end a step), ``EOS``
now and then."""


@pytest.fixture(scope="module")
def steppy_dir(tmp_path_factory):
    """A 2-layer random Llama that writes ``"\\n"`` often and ``EOS`` now and then."""

    def edit(model, tok):  # dimension 0 of the residual stream: a constant the head reads
        (newline,) = set(tok.convert_tokens_to_ids(tok.tokenize("\n\n")))  # "\n" "\n"
        model.model.embed_tokens.weight[:, 0] = 5.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[newline, 0] = NEWLINE
        model.lm_head.weight[tok.eos_token_id, 0] = EOS

    return tiny_llama(tmp_path_factory.mktemp("steppy") / "tiny-llama", edit)


SEARCH = "[{name:beam,reward:prm},{name:dvts,reward:prm},{name:particle,reward:prm}," \
         "{name:lookahead,reward:prm,lookahead:1}]"


def _args(steppy_dir, data, prm):
    return ["policy=hf", f"policy.path={steppy_dir}", "task=gsm8k", f"task.path={data}",
            "task.max_new_tokens=40", "task.max_steps=4", "eval.n_problems=3",
            "budgets=[1]", "search_budgets=[4]", f"methods={SEARCH}", "reward=hf",
            f"reward.path={prm}", "reward.format=qwen_prm"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, steppy_dir, test_file, prm_dir):  # noqa: F811
    """The main job's four search methods over the PRM (its outcome)."""
    tmp = tmp_path_factory.mktemp("search-hf")
    return run(_cfg(tmp, *_args(steppy_dir, test_file, prm_dir)))


def test_search_methods_with_a_pretrained_prm(searched):
    """Beam, DVTS, particle filtering and lookahead over an HF PRM, from the command line."""
    recs = {r["method"]: r for r in searched.records}
    assert set(recs) == {"beam", "dvts", "particle", "lookahead"}
    for name, r in recs.items():
        c = r["flops_components"]
        assert c["reward"]["executed"] >= c["reward"]["useful"] > 0, name
        assert 0.0 <= r["accuracy"] <= 1.0 and r["budget"] == 4
        assert ("lookahead" in c) == (name == "lookahead"), (name, c)
    assert recs["lookahead"]["flops_components"]["lookahead"]["useful"] > 0


@pytest.mark.parametrize("method", ["beam", "particle", "lookahead"])
def test_final_weights_are_the_prms_scores_of_the_final_rows(searched, prm_dir, method):  # noqa: F811
    """After the whole search (selections included), each row's final ``last`` weight is the
    PRM's score of that row's final text, scored whole; rows have several steps; one seed
    gives the same rows twice."""
    task, policy = searched.task, searched.policy
    rm = load_reward(prm_dir, format="qwen_prm", compiler_options=FAST_COMPILE)
    ps = task.problems(3, split="test")
    cfg = SearchConfig(method=method, beam_width=2, lookahead=1)
    n = 4

    def search(seed: int):
        res = scored.search_chunk(
            policy.graphdef, policy.params,
            RewardSpec(kind="prm", graphdef=rm.graphdef, external=True),
            scored.HubSteps(rm, task, ps.texts, n), task,
            ps.prompts, ps.prompt_len, jax.random.key(seed), cfg=cfg,
            num_samples=n, sampling=SamplingParams.make(1.0), hp=SearchParams.make(),
            cache_len=task.max_prompt_len + task.max_solution_len)
        return jax.device_get(res)

    got = search(0)
    tokens = np.asarray(got.tokens).reshape(3 * n, -1)
    plen = np.repeat(ps.prompt_len, n)
    length = np.asarray(got.length).reshape(-1)
    ends, mask = map(np.asarray, step_end_positions(
        tokens, plen, length, stop_rule(task.tokenizer), task.max_steps + 1))
    weights = np.asarray(got.weights).reshape(-1)
    steps = [solution_steps(task, tokens[b], int(plen[b]), ends[b][mask[b]])
             for b in range(3 * n)]
    scored_rows = [b for b in range(3 * n) if steps[b]]
    assert max(len(s) for s in steps) >= 2, "the policy should write several steps"
    want = [np.clip(rm.score([(ps.texts[b // n], [steps[b]])])[0][0][-1], EPS, 1 - EPS)
            for b in scored_rows]
    np.testing.assert_allclose(weights[scored_rows], want, rtol=0, atol=1e-5)
    again = search(0)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(got.tokens))
    np.testing.assert_array_equal(np.asarray(again.weights), np.asarray(got.weights))
