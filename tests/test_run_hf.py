"""The main job on a pretrained checkpoint: ``policy=hf`` + a text task, end to end, on a tiny
random Hugging Face Llama saved with ``save_pretrained`` (with a real BPE tokenizer and chat
template), and the configuration mistakes of that path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from hydra import compose, initialize_config_dir
from test_text_tasks import _bpe, _lines

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.run import run


def tiny_llama(path, edit=None):
    """Saves a 2-layer GQA Llama with random weights and a BPE tokenizer trained on GSM8K text
    at ``path``; ``edit(model, tokenizer)`` may change the weights first."""
    texts = [json.loads(x)["question"] for x in _lines("train.jsonl", 200)]
    tok = _bpe(texts)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg).float()
    if edit is not None:
        with torch.no_grad():
            edit(model, tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A 2-layer GQA Llama with random weights and a BPE tokenizer trained on GSM8K text."""
    return tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def test_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "gsm8k-test.jsonl"
    path.write_text("\n".join(_lines("test.jsonl", 6)) + "\n")
    return path


def _cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=[f"out_dir={tmp_path}/run",
                                            f"cache_dir={tmp_path}/ckpt", "progress=false",
                                            *overrides])


def test_pretrained_policy_on_a_text_task(tmp_path, hf_dir, test_file, capsys):
    args = ["policy=hf", f"policy.path={hf_dir}", "task=gsm8k", f"task.path={test_file}",
            "task.max_new_tokens=24", "method=verifier_free", "eval.n_problems=4",
            "budgets=[1,2]", "methods=[{name:single},{name:majority},{name:bon_loglik},"
            "{name:coverage},{name:particle,label:pf_oracle,reward:oracle}]",
            "search_budgets=[2]"]
    out = run(_cfg(tmp_path, *args))
    recs = out.records
    assert {r["method"] for r in recs} == {"single", "majority", "bon_loglik", "coverage",
                                           "pf_oracle"}
    for r in recs:
        assert 0 <= r["accuracy"] <= 1 and r["flops_useful"] > 0 and r["tokens"] > 0
        assert r["config"]["task"]["name"] == "gsm8k"
    assert out.policy.cfg.family == "llama"
    assert not list((tmp_path / "ckpt").glob("policy-*"))   # nothing was trained
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 1000
    capsys.readouterr()
    run(_cfg(tmp_path, *args))   # resumes
    assert "0 new record(s)" in capsys.readouterr().out


def test_learned_verifiers_on_a_pretrained_policy(tmp_path, hf_dir, test_file):
    """The Monte-Carlo PRM/ORM recipe on a pretrained policy: labels from its train split
    (validation on the problems after the training ones), reward models started from its
    weights, then pool and search methods score with them; a rerun reuses the cached models."""
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(_lines("train.jsonl", 80)) + "\n")
    args = ["policy=hf", f"policy.path={hf_dir}", "task=gsm8k", f"task.path={test_file}",
            f"task.train_path={train}", "task.max_new_tokens=16", "task.max_steps=4",
            "eval.n_problems=3", "budgets=[2]", "search_budgets=[2]",
            "methods=[{name:bon,reward:prm},{name:bon,label:bon_orm,reward:orm},"
            "{name:beam,reward:prm}]", "reward.labels.problems=8",
            "reward.labels.samples_per_problem=2", "reward.labels.rollouts=2",
            "reward.train.steps=4", "reward.train.eval_every=4"]
    out = run(_cfg(tmp_path, *args))
    assert {r["method"] for r in out.records} == {"bon", "bon_orm", "beam"}
    for r in out.records:
        c = r["flops_components"]
        assert c["reward"]["useful"] > 0 and c["reward"]["executed"] >= c["reward"]["useful"]
    assert set(out.rewards) == {"prm", "orm"}
    for kind, src in out.rewards.items():
        assert src.cfg.family == "llama" and src.cfg.head == "lm_value"
        assert (tmp_path / "ckpt" / src.meta["id"]).is_dir(), kind
    labels = list((tmp_path / "ckpt").glob("mc-labels-*.npz"))
    assert len(labels) == 1
    with np.load(labels[0]) as z:  # 8 training problems, then 64 validation ones
        assert len(z["train_tokens"]) == 8 * 2 and len(z["val_tokens"]) == 64 * 2


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    """A tiny random Qwen2.5-Math-PRM-style checkpoint (Qwen2 trunk + two-layer score head)
    with its own tokenizer (not the policy's)."""
    from test_hub_reward import QwenPRM, _tokenizer

    tok = _tokenizer()
    path = tmp_path_factory.mktemp("prm") / "tiny-qwen-prm"
    QwenPRM(len(tok), seed=2).save(path)
    tok.save_pretrained(path)
    return path


def test_pretrained_reward_model_scores_pool_methods(tmp_path, hf_dir, test_file, prm_dir):
    """reward=hf: a Hugging Face PRM scores the policy's decoded steps for best-of-N and
    weighted majority; the scores are the PRM's own on those steps, its FLOPs are charged."""
    from ttc.evaluate.sources import score_pool, solution_steps
    from ttc.rewards import step_end_positions

    args = ["policy=hf", f"policy.path={hf_dir}", "task=gsm8k", f"task.path={test_file}",
            "task.max_new_tokens=24", "eval.n_problems=3", "budgets=[1,4]",
            "methods=[{name:bon,reward:prm},{name:weighted_majority,reward:prm}]",
            "reward=hf", f"reward.path={prm_dir}", "reward.format=qwen_prm"]
    out = run(_cfg(tmp_path, *args))
    assert {(r["method"], r["budget"]) for r in out.records} == {
        (m, b) for m in ("bon", "weighted_majority") for b in (1, 4)}
    for r in out.records:
        c = r["flops_components"]["reward"]
        assert c["executed"] >= c["useful"] > 0
    src = out.rewards["prm"]
    assert src.meta["format"] == "qwen_prm" and src.cfg.family == "qwen2"
    pool = next((tmp_path / "run" / "pools").glob("*.npz"))
    with np.load(pool) as z:
        tokens, length = z["tokens"], z["length"]
    ps = out.task.problems(3, split="test")
    from ttc.decode import Samples

    samples = Samples(**{k: v for k, v in np.load(pool).items()} | {"cache_len": int(
        np.load(pool)["cache_len"])})
    got = score_pool(src, out.task, samples, ps, seed=0)
    from ttc.tasks.stops import stop_rule

    i, j = 1, 2
    ends, mask = step_end_positions(tokens[i:i + 1, j], ps.prompt_len[i:i + 1],
                                    length[i:i + 1, j], stop_rule(out.task.tokenizer),
                                    out.task.max_steps + 1)
    steps = solution_steps(out.task, tokens[i, j], int(ps.prompt_len[i]),
                           np.asarray(ends)[0][np.asarray(mask)[0]])
    want = src.scorer.score([(ps.texts[i], [steps])])[0][0]
    assert len(want) == got.mask[i, j].sum() > 0
    np.testing.assert_allclose(got.steps[i, j][got.mask[i, j]],
                               np.clip(want, 1e-3, 1 - 1e-3), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("overrides", "key"), [
    (["policy=hf", "policy.path={tmp}/nope", "task=gsm8k", "task.path={data}"], "policy.path"),
    (["policy=hf", "policy.path={data}", "task=gsm8k", "task.path={data}"], "policy.path"),
    (["policy=hf", "policy.path={hf}", "policy.dtype=float16", "task=gsm8k",
      "task.path={data}"], "policy.dtype"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k"], "task.path"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={tmp}/missing.jsonl"],
     "task.path"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "task.k_shot=2"],
     "task.k_shot"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}",
      "+task.answer_format=boxed"], "task.answer_format"),
    (["policy=hf", "policy.path={hf}", "task=jsonl", "task.path={data}",
      "task.answer_format=latex"], "task.answer_format"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}",
      "eval.n_problems=7"], "eval.n_problems"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "eval.n_problems=4"],
     "methods[4]"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}",
      "task.train_path={data}", "eval.n_problems=4", "method=bon"], "reward.labels.problems"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}",
      "task.train_path={data}", "reward.labels.problems=1", "reward.base=small",
      "eval.n_problems=4", "method=bon"], "reward.base"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "method=bon",
      "reward=hf", "reward.path={tmp}/nope", "reward.format=qwen_prm"], "reward.path"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "method=bon",
      "reward=hf", "reward.path={hf}", "reward.format=shepherd"], "reward.format"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "reward=hf",
      "eval.n_problems=4", "reward.path={hf}", "reward.format=orm",
      "methods=[{name:bon,reward:prm}]"], "methods[0]"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "reward=hf",
      "eval.n_problems=4", "reward.path={hf}", "reward.format=orm",
      "methods=[{name:beam,reward:orm}]"], "step-level search needs a step reward"),
    (["reward=hf", "reward.path={hf}", "reward.format=qwen_prm"], "reward=hf"),
    (["policy=hf", "policy.path={hf}", "task=gsm8k", "task.path={data}", "method=bon",
      "eval.n_problems=4", "reward=hf", "reward.path={hf}", "reward.format=qwen_prm"],
     "reward.path"),
    (["policy=hf", "policy.path={hf}"], "task=arithmetic"),
    (["task=gsm8k", "task.path={data}"], "task=gsm8k"),
])
def test_pretrained_mistakes_exit_2_naming_the_key(tmp_path, hf_dir, test_file, capsys,
                                                   overrides, key):
    subs = {"{tmp}": str(tmp_path), "{hf}": str(hf_dir), "{data}": str(test_file)}
    for a, b in subs.items():
        overrides = [o.replace(a, b) for o in overrides]
    with pytest.raises(SystemExit) as e:
        run(_cfg(tmp_path, *overrides))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert key in err, err
    assert not (tmp_path / "run").exists()


def test_hub_load_save_round_trip(hf_dir, tmp_path):
    """`ttc.hub.load` of an HF directory, then `ttc.hub.save`: transformers reads the copy to
    the same logits and the same tokenizer; a wrong path is one clear error."""
    import numpy as np

    from ttc import hub

    model = hub.load(hf_dir)
    out = hub.save(model, tmp_path / "copy")
    ids = model.tokenizer("Natalia sold clips to 48 of her friends.").input_ids
    ref = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(model.logits([ids]), want, atol=1e-4, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(out)("Natalia").input_ids == \
        model.tokenizer("Natalia").input_ids
    with pytest.raises(ValueError, match="does not exist"):
        hub.load(tmp_path / "nope")
