"""Hugging Face reward models (``ttc.hub.reward``) against ``transformers`` references.

Every format is checked on tiny random checkpoints written in the test (no network): a
Math-Shepherd-style Mistral causal LM, an RLHFlow-style tied Llama causal LM (Llama-3 RoPE), a
``Qwen2ForProcessRewardModel`` (a ``Qwen2Model`` and a torch ``score`` head saved by hand: its
modelling code is remote) and two ``*ForSequenceClassification`` ORMs (1 and 2 labels). The
tokenizer is a real byte-level BPE trained in the test, with the tag ``ки``, ``+``, ``-`` as
added tokens, ``<extra_0>`` as a special token and a ChatML template.

The references run each formatted text through the torch model alone (no batching, no cache)
and read the scores the way the models' own code does (token-id masks, the ``+`` of each
assistant turn, the last token); ttc scores two problems of three solutions of different step
counts and lengths through its shared-prefix KV cache, length-sorted padded chunks and (for a
solution that starts with a newline, which merges with the chat template's) full re-scoring.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import transformers as T
from safetensors.torch import load_file, save_file
from test_llama import _torch_float32_one_thread  # noqa: F401 (autouse fixture)

from ttc.errors import ConfigError
from ttc.hub.reward import FORMATS, QWEN_PRM_SYSTEM, HubReward, load_reward

TOL = 1e-5  # probabilities against the float32 torch reference
# LLVM without its optimisation passes: much less compile time for these tiny programs, the
# same IEEE arithmetic (no fast-math either way)
FAST_COMPILE = {"xla_backend_optimization_level": 0}
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
BASE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)

PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", [
        ["Tom starts with 3 apples.", "He buys 4 more, so 3 + 4 = 7.", "The answer is 7."],
        ["3 + 4 = 8.", "The answer is 8."],
        ["He has 3 apples.", "Then he buys 4 apples.", "So he has 3 + 4 = 7 apples.",
         "He eats none of them.", "The answer is 7."]]),
    ("A box holds 12 pens. Sam takes 5 pens out. How many pens are left?", [
        # starts with a newline: in the chat formats it merges with the template's "\n", so the
        # prefix tokens are not a prefix of this row's tokens and it is re-scored whole
        ["\nThe box has 12 pens.", "12 - 5 = 7 pens are left.", "The answer is 7."],
        ["Sam takes 5 of 12 pens, leaving 12 - 5 = 6.", "The answer is 6."],
        ["12 - 5 = 7.", "The answer is 7."]]),
]


def _similar(i: int) -> list[str]:
    """Five steps whose lengths differ only by their digits (the FLOP-ratio case)."""
    a, b, c = 10 + 7 * i, 20 + 3 * i, 5 + i
    return [f"First add the {a} red pens and the {b} blue pens to get {a + b} pens.",
            f"Then the box is filled again, so double it to get {2 * (a + b)} pens in all.",
            f"Sam takes {c} pens out of the box, so {2 * (a + b)} - {c} = {2 * (a + b) - c}.",
            f"So there are {2 * (a + b) - c} pens left in the box.",
            f"The answer is {2 * (a + b) - c}."]


SIMILAR = [("A box holds some red pens and some blue pens. The box is then filled again with "
            "as many pens. Sam takes some pens out of the box. How many pens are left in the "
            "box?", [_similar(i) for i in range(8)])]


# --------------------------------------------------------------------------- tokenizers


def _texts() -> list[str]:
    out = []
    for q, sols in PROBLEMS + SIMILAR:
        out += [q, *(s for sol in sols for s in sol),  # "\n\n" after a letter: one token
                *("\n\n".join(s.rstrip(".") for s in sol) for sol in sols)]
    return out * 5


def _tokenizer(markers: bool = True):
    """A byte-level BPE (Qwen pre-tokenizer) with ChatML; ``markers``: with the tag ``ки``,
    ``+``, ``-`` added and ``<extra_0>`` special (without: they split into several tokens)."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as RawTokenizer

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + ["<extra_0>"] * markers
    raw.train_from_iterator(_texts(), trainers.BpeTrainer(
        vocab_size=420, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if markers:
        raw.add_tokens(["ки", "+", "-"])
    hf = T.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    hf.chat_template = CHATML
    return hf


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


def _id(tok, token: str) -> int:
    return tok.convert_tokens_to_ids(token)


def _chat_ids(tok, messages) -> list[int]:
    ids = tok.apply_chat_template(messages, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


# --------------------------------------------------------------------------- checkpoints


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every weight random, norms around identity, so scores are spread over (0, 1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if "norm" in name else 0.0
            p.copy_(centre + (0.3 if "norm" in name else 0.15) * torch.randn_like(p))


def _causal(config_cls, model_cls, vocab: int, seed: int, **kw):
    model = model_cls(config_cls(vocab_size=vocab, **BASE | kw, attn_implementation="eager"))
    _randomize(model, seed)
    return model.eval()


class QwenPRM(torch.nn.Module):
    """``Qwen2ForProcessRewardModel`` (remote code): a Qwen2Model and
    ``score = Linear(D, D) -> ReLU -> Linear(D, 2)``."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        self.config = T.Qwen2Config(vocab_size=vocab, **BASE, attn_implementation="eager")
        self.model = T.Qwen2Model(self.config)
        d = self.config.hidden_size
        self.score = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(),
                                         torch.nn.Linear(d, 2))
        _randomize(self, seed)
        self.eval()

    def save(self, directory) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict() | {"architectures": ["Qwen2ForProcessRewardModel"]}
        (directory / "config.json").write_text(json.dumps(config, default=str))
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _build(case: str, vocab: int):
    if case == "math_shepherd":
        return _causal(T.MistralConfig, T.MistralForCausalLM, vocab, 0, sliding_window=24)
    if case == "rlhflow":
        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        return _causal(T.LlamaConfig, T.LlamaForCausalLM, vocab, 1, tie_word_embeddings=True,
                       rope_scaling=rope)
    if case == "qwen_prm":
        return QwenPRM(vocab, 2)
    if case == "orm_sigmoid":
        return _causal(T.Qwen2Config, T.Qwen2ForSequenceClassification, vocab, 3, num_labels=1)
    return _causal(T.LlamaConfig, T.LlamaForSequenceClassification, vocab, 4, num_labels=2)


CASES = {"math_shepherd": "math_shepherd", "rlhflow": "rlhflow", "qwen_prm": "qwen_prm",
         "orm_sigmoid": "orm", "orm_softmax": "orm"}
"""Checkpoint case -> reward format."""
OPTIONS = {"math_shepherd": dict(chunk_rows=4), "rlhflow": dict(prefix_rows=1)}
"""Batching options of some cases: several chunks per prefill group; one problem per group."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok) -> dict:
    """``case -> (torch model, directory)``, each with the tokenizer saved beside it."""
    out = {}
    for case in CASES:
        d = tmp_path_factory.mktemp(case)
        model = _build(case, len(tok))
        if isinstance(model, QwenPRM):
            model.save(d)
        else:
            model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        out[case] = (model, d)
    return out


@pytest.fixture(scope="module")
def rewards(saved) -> dict[str, HubReward]:
    return {case: load_reward(d, format=CASES[case], compiler_options=FAST_COMPILE,
                              **OPTIONS.get(case, {}))
            for case, (_, d) in saved.items()}


# --------------------------------------------------------------------------- torch references


def _pair(logits: torch.Tensor, tok) -> np.ndarray:
    """``softmax(logits[+], logits[-])[+]`` of ``[N, V]`` logits."""
    return logits[:, [_id(tok, "+"), _id(tok, "-")]].softmax(-1)[:, 0].numpy()


def _ref_math_shepherd(model, tok, question: str, steps: list[str]) -> np.ndarray:
    text = f"{question} " + "\n".join(f"{s} ки" for s in steps)
    ids = torch.tensor([tok(text)["input_ids"]])
    logits = model(ids).logits[0]
    return _pair(logits[ids[0] == _id(tok, "ки")], tok)


def _ref_rlhflow(model, tok, question: str, steps: list[str]) -> np.ndarray:
    """search-and-learn's one-conversation-per-step loop: the logits just before the last
    assistant ``+``."""
    conv, out = [], []
    for k, step in enumerate(steps):
        conv += [{"role": "user", "content": f"{question} {step}" if k == 0 else step},
                 {"role": "assistant", "content": "+"}]
        ids = _chat_ids(tok, conv)
        last = max(i for i, t in enumerate(ids) if t == _id(tok, "+"))
        out.append(_pair(model(torch.tensor([ids])).logits[0, last - 1: last], tok)[0])
    return np.asarray(out)


def _ref_qwen_prm(model, tok, question: str, steps: list[str]) -> np.ndarray:
    """Qwen2.5-Math-PRM's model-card recipe: render, encode, softmax at ``<extra_0>``."""
    messages = [{"role": "system", "content": QWEN_PRM_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = torch.tensor([tok.encode(tok.apply_chat_template(messages, tokenize=False))])
    hidden = model.model(ids).last_hidden_state[0]
    return model.score(hidden[ids[0] == _id(tok, "<extra_0>")]).softmax(-1)[:, 1].numpy()


def _ref_orm(model, tok, question: str, steps: list[str]) -> np.ndarray:
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": "\n\n".join(steps)}]
    logits = model(torch.tensor([_chat_ids(tok, messages)])).logits[0]
    prob = logits.sigmoid()[0] if logits.numel() == 1 else logits.softmax(-1)[1]
    return np.asarray([prob.item()])


REFERENCES = {"math_shepherd": _ref_math_shepherd, "rlhflow": _ref_rlhflow,
              "qwen_prm": _ref_qwen_prm, "orm": _ref_orm}


def _reference(case: str, model, tok, problems) -> list[list[np.ndarray]]:
    ref = REFERENCES[CASES[case]]
    with torch.no_grad():
        return [[ref(model, tok, q, s) for s in sols] for q, sols in problems]


def _max_diff(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> float:
    for x, y in zip(a, b, strict=True):
        assert [len(s) for s in x] == [len(s) for s in y]
    return max(float(np.abs(u - v).max()) for x, y in zip(a, b, strict=True)
               for u, v in zip(x, y, strict=True))


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", list(CASES))
def test_scores_match_torch(case, saved, rewards, tok):
    """Both paths (shared prefix, and every row re-scored whole) equal the torch reference."""
    model, _ = saved[case]
    rm = rewards[case]
    rm.flops.reset()
    ref = _reference(case, model, tok, PROBLEMS)
    shared = rm.score(PROBLEMS)
    assert rm.flops.rows == 6
    # the newline-first solution cannot share a prefix that ends in the template's "\n"
    assert rm.flops.full_rows == (CASES[case] in ("qwen_prm", "orm")), rm.flops
    assert 0 < rm.flops.useful < rm.flops.executed
    full = rm.score(PROBLEMS, share_prefix=False)
    assert all(s.dtype == np.float64 and ((s > 0) & (s < 1)).all() for p in shared for s in p)
    counts = [[len(s) for s in sols] for _, sols in PROBLEMS]
    if CASES[case] == "orm":
        counts = [[1] * len(c) for c in counts]
    assert [[len(s) for s in p] for p in shared] == counts
    d_shared, d_full = _max_diff(shared, ref), _max_diff(full, ref)
    print(f"{case}: max |ttc - torch| shared {d_shared:.2e}, full {d_full:.2e}")
    assert d_shared <= TOL and d_full <= TOL, (d_shared, d_full)


def test_prefix_sharing_flops(rewards, tok):
    """Eight solutions of similar length: prefix sharing scores as full re-scoring does, does
    the same useful work (counted independently here), executes less and keeps
    useful/executed >= 0.8."""
    rm = rewards["math_shepherd"]
    rm.flops.reset()
    shared = rm.score(SIMILAR)
    a = copy.copy(rm.flops)
    rm.flops.reset()
    full = rm.score(SIMILAR, share_prefix=False)
    b = rm.flops
    assert _max_diff(shared, full) <= TOL
    assert (a.full_rows, b.full_rows, a.rows, b.rows) == (0, 8, 8, 8)
    assert a.useful == pytest.approx(_useful(rm, tok, SIMILAR), rel=1e-12)
    assert b.useful == pytest.approx(a.useful, rel=1e-12)
    assert a.executed == pytest.approx(_executed(rm, tok, SIMILAR), rel=1e-12)
    assert b.executed > a.executed and b.ratio < a.ratio
    print(f"useful/executed: shared {a.ratio:.3f}, full re-scoring {b.ratio:.3f}")
    assert a.ratio >= 0.8, a


def test_empty_inputs(rewards):
    rm = rewards["math_shepherd"]
    assert rm.score([]) == [] and rm.score([("How many?", [])]) == [[]]
    (scores,), = rm.score([("How many?", [[]])])  # no steps: nothing to score
    assert scores.shape == (0,)


def _fpt(rm: HubReward, context: int) -> float:
    """The ledger formula without the LM head (the trunk never runs it); a sliding-window layer
    attends at most its window (the Math-Shepherd model here is a Mistral with window 24)."""
    cfg = rm.cfg
    seen = sum(context if w is None else min(context, w) for w in cfg.windows)
    return 2.0 * (cfg.matmul_params - cfg.d_model * cfg.vocab_size) + 4.0 * cfg.d_attn * seen


def _executed(rm: HubReward, tok, problems) -> float:
    """One padded prefill row (the question, width rounded to 16, attending over its pad), then
    the 8 suffixes in chunks of ``chunk_rows=4`` rows of one width (the longest suffix rounded
    to 16) over ``pad + width`` cache slots, and the head at 8 read slots per row."""
    ((q, sols),) = problems
    lp = len(tok(q)["input_ids"])
    longest = max(len(tok(f"{q} " + "\n".join(f"{s} ки" for s in steps))["input_ids"]) - lp
                  for steps in sols)
    pad, width = -(-lp // 16) * 16, -(-longest // 16) * 16
    return (pad * _fpt(rm, pad) + len(sols) * width * _fpt(rm, pad + width)
            + len(sols) * 8 * 2.0 * 2 * rm.cfg.d_model)


def _useful(rm: HubReward, tok, problems) -> float:
    """Each real token once at its own context (the question's tokens once), plus the 2-logit
    head at every tag, from this test's own tokenization."""
    d = rm.cfg.d_model

    def span(a: int, b: int) -> float:  # tokens a .. b-1, token p attending to p + 1 slots
        return sum(_fpt(rm, p + 1) for p in range(a, b))

    total = 0.0
    for q, sols in problems:
        lp = len(tok(q)["input_ids"])
        total += span(0, lp)
        for steps in sols:
            n = len(tok(f"{q} " + "\n".join(f"{s} ки" for s in steps))["input_ids"])
            total += span(lp, n) + 2.0 * 2 * d * len(steps)
    return total


# --------------------------------------------------------------------------- errors


def test_unknown_format_and_missing_path(saved, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown reward format 'prm800k'.*math_shepherd, "
                                          r"rlhflow, qwen_prm, orm"):
        load_reward(saved["qwen_prm"][1], format="prm800k")
    assert [f.name for f in FORMATS] == ["math_shepherd", "rlhflow", "qwen_prm", "orm"]
    with pytest.raises(ConfigError, match=r"nowhere does not exist"):
        load_reward(tmp_path / "nowhere", format="orm")


def test_format_must_match_the_architecture(saved):
    with pytest.raises(ConfigError, match=r"'orm' reads \*ForSequenceClassification.*"
                                          r"'MistralForCausalLM'.*math_shepherd, rlhflow"):
        load_reward(saved["math_shepherd"][1], format="orm")
    with pytest.raises(ConfigError, match=r"'Qwen2ForProcessRewardModel'.*qwen_prm"):
        load_reward(saved["qwen_prm"][1], format="rlhflow")


def test_missing_head_tensors_are_named(saved, tmp_path):
    d = tmp_path / "headless"
    shutil.copytree(saved["qwen_prm"][1], d)
    tensors = load_file(d / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("score.0.")},
              d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"'qwen_prm' needs the head tensor\(s\) "
                                          r"\['score\.0\.weight', 'score\.0\.bias'\]"):
        load_reward(d, format="qwen_prm")


@pytest.mark.parametrize(("case", "marker"), [("math_shepherd", "ки"), ("qwen_prm", "<extra_0>")])
def test_markers_must_be_single_tokens(case, marker, saved, tmp_path):
    d = tmp_path / case
    shutil.copytree(saved[case][1], d)
    _tokenizer(markers=False).save_pretrained(d)
    with pytest.raises(ConfigError, match=rf"marker '{marker}' to be a single token"):
        load_reward(d, format=CASES[case])


@pytest.mark.parametrize("case", list(CASES))
def test_session_scores_growing_solutions_as_whole_texts(case, rewards):
    """:class:`ttc.hub.session.ScoringSession` (per-row KV caches, only new tokens run) gives
    every row's newest-step score as :meth:`HubReward.score` of the whole text does, step after
    step, across a selection (rows copied onto others) and a lookahead peek (``commit=False``),
    and runs less than re-scoring every row whole at every step."""
    from ttc.hub.session import ScoringSession

    rm = rewards[case]
    (q0, sols0), (q1, sols1) = PROBLEMS
    sols = [sols0[0], sols0[2], sols1[0], sols1[2]]  # two rows per problem
    session = ScoringSession.start(rm, [q0, q1], num_samples=2)
    have = [0, 0, 0, 0]  # steps of each row so far
    text = [list(s) for s in sols]  # each row's full solution (rows change under gather)
    whole = 0.0
    for it in range(5):
        rows = [r for r in range(4) if have[r] < len(text[r])]
        if not rows:
            break
        for r in rows:
            have[r] += 1
        steps = [text[r][: have[r]] for r in rows]
        got = session.score(rows, steps)
        rm.flops.reset()
        want = [rm.score([(session.questions[r], [s])])[0][0][-1]
                for r, s in zip(rows, steps, strict=True)]
        whole += rm.flops.executed
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=f"{case} step {it}")
        peek = [r for r in rows if have[r] < len(text[r])]
        if peek:
            ahead = [text[r][: have[r] + 1] for r in peek]
            got = session.score(peek, ahead, commit=False)
            want = [rm.score([(session.questions[r], [s])])[0][0][-1]
                    for r, s in zip(peek, ahead, strict=True)]
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        if it == 1:  # row 1 becomes a copy of row 0 and row 3 of row 2
            idx = np.array([0, 0, 2, 2])
            session.gather(idx)
            have = [have[i] for i in idx]
            text = [text[i] for i in idx]
    assert session.flops.rows > 0 and session.peek_flops.rows > 0
    assert 0 < session.flops.useful <= session.flops.executed < whole


def test_reward_cost_counts_sliding_windows():
    """The HF reward models' ledger view charges a suffix of tokens at each layer's windowed
    context (a Mistral/Gemma 3 reward model), token by token, and per token as the policy
    config does."""
    from ttc.hub.reward import _Cost
    from ttc.models.llama import LlamaConfig

    cfg = LlamaConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                      head_dim=8, d_ff=32, sliding_window=3,
                      layer_types=("sliding_attention", "full_attention"))
    cost = _Cost(matmul_params=cfg.matmul_params, n_layers=2, d_attn=cfg.d_attn,
                 head_params=0, windows=cfg.windows)
    for c in (1, 3, 9):
        assert cost.flops_per_token(c) == cfg.flops_per_token(c)
    assert cost.suffix(2, 7) == pytest.approx(sum(cfg.flops_per_token(p + 1)
                                                  for p in range(2, 7)), rel=1e-12)
    plain = _Cost(matmul_params=cfg.matmul_params, n_layers=2, d_attn=cfg.d_attn,
                  head_params=0, windows=(None, None))
    assert cost.suffix(2, 7) < plain.suffix(2, 7)
