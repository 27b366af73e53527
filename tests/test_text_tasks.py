"""Text tasks (GSM8K, MATH, generic JSONL) and the Hugging Face tokenizer adapter.

The tokenizer is real but tiny: a byte-level BPE (Qwen-style pre-tokenizer, so punctuation and
newlines merge into tokens such as ``".\\n\\n"``) trained in-test on GSM8K train text, with ChatML
special tokens and chat template, wrapped in ``transformers.PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc.rewards import step_verdicts
from ttc.tasks import INVALID_ANSWER, Task, Tokenizer, make_task, make_text_task
from ttc.tasks.base import answers_on_host, traced_answers
from ttc.tasks.hf_tokenizer import HFTokenizer, step_end, step_tables_of, stop_ids_of
from ttc.tasks.text import TextTask, default_system_prompt, gsm8k_task, jsonl_task, math_task

GSM8K = Path(__file__).resolve().parents[1] / "../shared/data/gsm8k"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MAX_PROMPT = 512  # given, so tests that use the full test file do not encode all of it


def _lines(name: str, n: int | None = None) -> list[str]:
    path = GSM8K / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return lines[:n]


def _bpe(texts: list[str], *, bos: bool = False):
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
    from tokenizers import Tokenizer as RawTokenizer
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=800, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>",
                                       eos_token="<|endoftext|>")
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                 pad_token="<|endoftext|>")
    hf.chat_template = CHATML
    return hf


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    recs = [json.loads(ln) for ln in _lines("train.jsonl", 300)]
    steps = [r["question"] + "\n\n" + "\n\n".join(r["answer"].split("\n")) for r in recs]
    return steps + [r["answer"] for r in recs]  # single newlines too: tokens such as ".\n"


@pytest.fixture(scope="module")
def hf(train_texts):
    return _bpe(train_texts)


@pytest.fixture(scope="module")
def tok(hf) -> HFTokenizer:
    return HFTokenizer(hf)


@pytest.fixture(scope="module")
def gsm(tok) -> TextTask:
    return gsm8k_task(tok, str(GSM8K / "test.jsonl"), max_prompt_len=MAX_PROMPT,
                      max_new_tokens=160)


@pytest.fixture(scope="module")
def small_train(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("gsm8k") / "train.jsonl"
    path.write_text("\n".join(_lines("train.jsonl", 12)) + "\n")
    return str(path)


MATH_RECORDS = [
    {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?", "level": "Level 3",
     "solution": "We add: $\\frac14+\\frac14=\\frac{2}{4}$.\n\nSimplifying gives "
                 "$\\boxed{\\frac{1}{2}}$."},
    {"problem": "Compute $\\sqrt{8}\\cdot\\sqrt{2}$.", "level": "Level 5", "answer": "4",
     "solution": "$\\sqrt{8}\\cdot\\sqrt{2}=\\sqrt{16}$.\n\nSo the product is $\\boxed{4}$."},
    {"problem": "Solve $2x = 6$.", "level": "Level ?",
     "solution": "Divide by 2:\n$$x = 3.$$\n\nThus $\\boxed{x = 3}$."},
]


@pytest.fixture(scope="module")
def math_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("math") / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH_RECORDS))
    return str(path)


def _rows(task: TextTask, ps, texts: list[str], idx: list[int], *, eos: bool = True):
    """Token rows prompt(idx[r]) + encode(texts[r]) (+ EOS), PAD-padded; and their lengths."""
    tok = task.tokenizer
    width = task.max_prompt_len + task.max_solution_len
    out = np.full((len(texts), width), tok.PAD, np.int32)
    lengths = []
    for r, (text, i) in enumerate(zip(texts, idx, strict=True)):
        lp = int(ps.prompt_len[i])
        gen = tok.encode(text) + ([tok.EOS] if eos else [])
        out[r, :lp] = ps.prompts[i, :lp]
        out[r, lp : lp + len(gen)] = gen
        lengths.append(lp + len(gen))
    return (jnp.asarray(out), jnp.asarray(ps.prompt_len[np.asarray(idx)]),
            jnp.asarray(lengths, jnp.int32))


# ---- the tokenizer adapter ---------------------------------------------------------------------

def test_hf_tokenizer_special_ids_and_text(tok, hf):
    vocab = hf.get_vocab()
    assert tok.hf is hf and tok.BOS is None and not tok.adds_bos
    assert tok.EOS == vocab["<|endoftext|>"] == tok.PAD
    assert tok.stop_ids == (vocab["<|endoftext|>"], vocab["<|im_end|>"])
    assert stop_ids_of(tok) == tok.stop_ids
    text = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n\nShe makes $18."
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([*ids, tok.EOS, *tok.encode("junk")]) == text  # stops at a stop id
    assert tok.decode([*ids[:3], vocab["<|im_end|>"], *ids[3:]]) == tok.decode(ids[:3])
    assert tok.decode([*ids, tok.PAD, tok.PAD], stop=False) == text  # PAD dropped
    msgs = [{"role": "user", "content": "hi"}]
    want = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    assert tok.apply_chat_template(msgs) == list(want)


def test_step_ids_include_tokens_with_the_delimiter_inside(tok):
    texts = tok.token_texts
    inside = [i for i, t in enumerate(texts) if t == ".\n\n"]
    assert inside, "the trained vocabulary should merge '.\\n\\n' into one token"
    assert inside[0] in tok.step_ids and tok.step_contains[inside[0]]
    assert texts[tok.step_id] == "\n\n"  # the exact delimiter token comes first
    assert all("\n\n" in texts[i] for i in tok.step_ids)
    assert set(np.flatnonzero(tok.step_contains)) == set(tok.step_ids)
    assert tok.step_contains.shape == (tok.vocab_size,) and tok.step_contains.dtype == bool


def test_a_delimiter_split_over_two_tokens_is_detected_by_the_table_rule(tok):
    nl = tok.token_texts.index("\n")
    word = tok.encode(" eggs")[0]
    period_nl = next(i for i, t in enumerate(tok.token_texts) if t == ".\n")
    assert tok.ends_with_partial[nl] and tok.starts_with_rest[nl]
    assert not tok.step_contains[nl]
    tables = step_tables_of(tok)
    prev = jnp.array([nl, period_nl, word, nl, word])
    cur = jnp.array([nl, nl, nl, word, tok.step_id])
    got = jax.jit(step_end)(prev, cur, tables)
    assert got.tolist() == [True, True, False, False, True]
    assert tok.decode([period_nl, nl]) == ".\n\n"


def test_vocab_size_can_exceed_the_tokenizer(hf):
    t = HFTokenizer(hf, vocab_size=len(hf) + 24)
    assert t.vocab_size == len(hf) + 24
    assert t.step_contains.shape == (len(hf) + 24,) and not t.step_contains[len(hf):].any()
    assert t.decode([*t.encode("ab"), len(hf) + 3]) == "ab"
    t.vocab_size = len(hf) + 8
    assert t.ends_with_partial.shape == (len(hf) + 8,)
    with pytest.raises(ValueError, match="special ids"):
        t.vocab_size = 1
    assert step_tables_of(t, len(hf) + 40).contains.shape == (len(hf) + 40,)


def test_helpers_accept_the_char_tokenizer():
    char = Tokenizer(alphabet="0123456789;", step_delimiter=";")
    assert stop_ids_of(char) == (char.EOS,)
    tables = step_tables_of(char)
    assert np.flatnonzero(tables.contains).tolist() == [char.step_id]
    assert not tables.ends_with_partial.any() and not tables.starts_with_rest.any()
    prev = jnp.array([3, 3, 3])
    assert step_end(prev, jnp.array([char.step_id, 4, 99]), tables).tolist() == [
        True, False, False]


def test_longer_delimiters_have_general_tables(hf):
    t = HFTokenizer(hf, step_delimiter="\n\n\n")
    assert t.ends_with_prefix.shape == (2, t.vocab_size)
    with pytest.raises(ValueError, match="ends_with_prefix"):
        _ = t.ends_with_partial


# ---- GSM8K --------------------------------------------------------------------------------------

def test_gsm8k_problems_shapes_and_contents(gsm, tok):
    recs = [json.loads(ln) for ln in _lines("test.jsonl", 5)]
    ps = gsm.problems(5, seed=0, split="test")
    assert isinstance(gsm, Task)
    assert ps.prompts.shape == (5, MAX_PROMPT) and ps.prompts.dtype == np.int32
    assert ps.gold.shape == (5, gsm.max_solution_len + 1)
    assert ps.texts == tuple(r["question"] for r in recs)
    for i, r in enumerate(recs):
        lp = int(ps.prompt_len[i])
        assert (ps.prompts[i, lp:] == tok.PAD).all()
        prompt = tok.decode(ps.prompts[i, :lp], stop=False)
        assert prompt.startswith("<|im_start|>system\n" + gsm.system_prompt + "<|im_end|>")
        assert prompt.endswith(f"<|im_start|>user\n{r['question']}<|im_end|>\n"
                               "<|im_start|>assistant\n")
        gold = r["answer"].rsplit("####", 1)[1].strip()
        assert gsm.interner.representative(int(ps.answers[i])) == gold
        lines = r["answer"].split("\n")[:-1]
        assert ps.difficulty[i] == len(lines)
        steps = [re.sub(r"<<[^>]*>>", "", line).strip() for line in lines]
        want = "\n\n".join([*steps, f"The answer is: {gold}"])
        assert tok.decode(ps.gold[i]) == want and "<<" not in want
        n = len(tok.encode(want))
        assert ps.gold[i, n] == tok.EOS and (ps.gold[i, n + 1 :] == tok.PAD).all()
    assert ps.answers.tolist() == [gsm.interner.intern(g) for g in
                                   (r["answer"].rsplit("####", 1)[1].strip() for r in recs)]


def test_problems_are_the_first_n_in_file_order_whatever_the_seed(gsm):
    a, b = gsm.problems(3, seed=0, split="test"), gsm.problems(3, seed=7, split="test")
    assert a.texts == b.texts and (a.prompts == b.prompts).all()
    assert gsm.problems(5, seed=1, split="test").texts[:3] == a.texts
    with pytest.raises(ValueError, match="only 1319"):
        gsm.problems(1320, seed=0, split="test")
    with pytest.raises(ValueError, match="train_path"):
        gsm.problems(1, seed=0, split="train")
    with pytest.raises(ValueError, match="split"):
        gsm.problems(1, seed=0, split="dev")


def test_default_system_prompts_ask_for_steps_and_the_answer_format():
    assert "blank line" in default_system_prompt("gsm8k") and "The answer is:" in \
        default_system_prompt("gsm8k")
    boxed = default_system_prompt("boxed")
    assert "Therefore, the final answer is: $\\boxed{answer}$." in boxed


def test_k_shot_prompts_and_the_train_split(tok, small_train):
    recs = [json.loads(ln) for ln in _lines("train.jsonl", 12)]
    task = gsm8k_task(tok, str(GSM8K / "test.jsonl"), train_path=small_train, k_shot=2,
                      max_prompt_len=1024)
    ps = task.problems(2, seed=0, split="train")
    assert ps.texts == (recs[2]["question"], recs[3]["question"])  # shots are not problems
    prompt = tok.decode(ps.prompts[0, : ps.prompt_len[0]], stop=False)
    for shot in recs[:2]:
        gold = shot["answer"].rsplit("####", 1)[1].strip()
        assert f"<|im_start|>user\n{shot['question']}<|im_end|>" in prompt
        assert f"The answer is: {gold}<|im_end|>\n<|im_start|>user\n" in prompt
    assert prompt.index(recs[1]["question"]) < prompt.index(recs[2]["question"])
    with pytest.raises(ValueError, match="only 10 after its 2 k-shot"):
        task.problems(11, seed=0, split="train")
    with pytest.raises(ValueError, match="needs train_path"):
        gsm8k_task(tok, str(GSM8K / "test.jsonl"), k_shot=1)


def test_plain_prompts_without_chat_and_bos_when_the_tokenizer_adds_it(tok, train_texts,
                                                                       small_train):
    task = gsm8k_task(tok, small_train, chat=False)
    ps = task.problems(1, seed=0, split="test")
    text = tok.decode(ps.prompts[0, : ps.prompt_len[0]], stop=False)
    assert text == task.system_prompt + f"\n\nQuestion: {ps.texts[0]}\nAnswer:"
    assert task.max_prompt_len == max(len(task.prompt_ids(q)) for q in
                                      (p.question for p in task.records("test")))
    bos_tok = HFTokenizer(_bpe(train_texts[:50], bos=True))
    assert bos_tok.adds_bos and bos_tok.BOS is not None
    task = gsm8k_task(bos_tok, small_train)  # no chat template: plain text
    ps = task.problems(2, seed=0, split="test")
    assert (ps.prompts[:, 0] == bos_tok.BOS).all()
    assert bos_tok.decode(ps.prompts[0, 1 : ps.prompt_len[0]]).startswith(task.system_prompt)


def test_a_given_max_prompt_len_that_is_too_small_is_an_error(tok, small_train):
    task = gsm8k_task(tok, small_train, max_prompt_len=20)
    with pytest.raises(ValueError, match=r"train.jsonl:1: the prompt has \d+ tokens"):
        task.problems(1, seed=0, split="test")


def test_missing_file_and_missing_field_errors_name_the_path_line_and_field(tok, tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match=f"{missing}.*cannot be read"):
        gsm8k_task(tok, str(missing))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=f"{bad}:2: the record has no field 'answer'"):
        gsm8k_task(tok, str(bad))
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": \n')
    with pytest.raises(ValueError, match=f"{bad}:3: is not valid JSON"):
        gsm8k_task(tok, str(bad))
    bad.write_text('{"q": "q", "a": "1"}\n')
    with pytest.raises(ValueError, match="no field 'question'"):
        jsonl_task(tok, str(bad))
    with pytest.raises(ValueError, match="no field 'lvl'"):
        jsonl_task(tok, str(bad), question_field="q", answer_field="a", difficulty_field="lvl")
    with pytest.raises(ValueError, match="answer_format"):
        jsonl_task(tok, str(bad), question_field="q", answer_field="a", answer_format="latex")


def test_extract_answer_on_host_arrays_of_any_leading_shape(gsm):
    ps = gsm.problems(3, seed=0, split="test")
    gold0 = int(ps.answers[0])  # 18
    texts = ["Janet sells 9 eggs.\n\nThe answer is: 18",
             "She makes $18.\n\n#### 18.00",
             "So 9 * 2 = 18 dollars",
             "I do not know.",
             "Total: $1,000.\n\nThe answer is 1000.",
             "#### 1000"]
    tokens, pl, _ = map(np.asarray, _rows(gsm, ps, texts, [0, 0, 0, 0, 1, 2]))
    ids = gsm.extract_answer(tokens, pl)
    assert ids.dtype == np.int32
    ids = ids.tolist()
    assert ids[:3] == [gold0] * 3 and ids[3] == INVALID_ANSWER
    assert ids[4] == ids[5] >= 0 and ids[4] != gold0  # equivalent answers across rows
    batched = gsm.extract_answer(np.stack([tokens, tokens[::-1]]), np.stack([pl, pl[::-1]]))
    assert batched.tolist() == [ids, ids[::-1]]
    shared = gsm.extract_answer(tokens[None], np.stack([pl, pl]))  # leading axes broadcast
    assert shared.tolist() == [ids, ids]
    assert gsm.extract_answer(*_rows(gsm, ps, texts, [0, 0, 0, 0, 1, 2])[:2]).tolist() == ids


def test_text_answers_are_host_work_refused_under_jit(gsm):
    """A text task's answers decode text on the host: the jitted samplers leave them out
    (``answers_on_host``) and a traced call is a clear error, not a host callback."""
    ps = gsm.problems(1, seed=0, split="test")
    tokens, pl, length = _rows(gsm, ps, ["The answer is: 18"], [0])
    assert answers_on_host(gsm)
    with pytest.raises(TypeError, match="host work"):
        jax.jit(gsm.extract_answer)(tokens, pl)
    with pytest.raises(TypeError, match="host work"):
        jax.jit(gsm.prefix_correct)(tokens, pl, length, jnp.asarray(ps.gold))
    placeholder = jax.jit(lambda t, p: traced_answers(gsm, t, p))(tokens, pl)
    assert placeholder.tolist() == [INVALID_ANSWER]
    assert hash(gsm) == hash(gsm) and gsm == gsm


def test_prefix_correct_is_an_outcome_oracle(gsm, tok):
    ps = gsm.problems(2, seed=0, split="test")
    gold = ps.gold[[0, 0, 0, 1]]
    texts = ["9 eggs.\n\nThe answer is: 18", "9 eggs.\n\nThe answer is: 17",
             "I am not sure.", "The answer is: 3"]
    tokens, pl, length = map(np.asarray, _rows(gsm, ps, texts, [0, 0, 0, 1]))
    f = gsm.prefix_correct
    assert f(tokens, pl, length, gold).tolist() == [True, False, False, True]  # finished rows
    assert f(tokens, pl, length - 1, gold).tolist() == [True] * 4  # unfinished: True
    assert f(tokens, pl, pl, gold).tolist() == [True] * 4  # empty prefix
    ends = np.stack([pl + 2, length - 1, length], axis=1)  # every step end of a row at once
    want = [[True, True, True], [True, True, False], [True, True, False], [True, True, True]]
    assert f(tokens[:, None], pl[:, None], ends, gold[:, None]).tolist() == want
    # the oracle's step verdicts (ends are last-token positions there; masked steps False)
    mask = np.array([[True, True, True]] * 3 + [[True, True, False]])
    got = step_verdicts(gsm, tokens, pl, ends - 1, mask, gold)
    assert got.tolist() == (np.array(want) & mask).tolist()


def test_check_steps_marks_every_step_with_the_final_verdict(gsm):
    ps = gsm.problems(1, seed=0, split="test")
    good = "Janet sells 16 - 3 - 4 = 9 eggs.\n\nShe makes 18.\n\nThe answer is: 18"
    assert gsm.check_steps(0, ps, good) == [True, True, True]
    assert gsm.check_steps(0, ps, good.replace("18", "19")) == [False, False, False]


def test_a_truncated_gold_keeps_its_answer_id(tok, small_train):
    task = gsm8k_task(tok, small_train, max_new_tokens=6)
    ps = task.problems(1, seed=0, split="test")
    assert ps.gold.shape == (1, 7) and ps.gold[0, -1] == tok.EOS
    gold = task.records("test")[0].answer
    tokens, pl, length = _rows(task, ps, [f"The answer is: {gold}"], [0])
    tokens = jnp.pad(tokens, ((0, 0), (0, 16)), constant_values=tok.PAD)  # longer than budget
    assert task.prefix_correct(tokens, pl, length, ps.gold).tolist() == [True]


# ---- MATH and generic JSONL ----------------------------------------------------------------------

def test_math_task_from_a_jsonl_written_here(tok, math_file):
    task = math_task(tok, math_file)
    assert task.name == "math" and task.answer_format == "boxed"
    ps = task.problems(3, seed=0, split="test")
    assert ps.difficulty.tolist() == [3, 5, 0]
    reps = [task.interner.representative(int(a)) for a in ps.answers]
    assert reps == ["\\frac{1}{2}", "4", "x = 3"]
    gold0 = tok.decode(ps.gold[0])
    assert gold0 == ("We add: $\\frac14+\\frac14=\\frac{2}{4}$.\n\nSimplifying gives "
                     "$\\boxed{\\frac{1}{2}}$.\n\n"
                     "Therefore, the final answer is: $\\boxed{\\frac{1}{2}}$.")
    assert "Divide by 2:\n$$x = 3.$$" in tok.decode(ps.gold[2])  # paragraphs stay whole
    texts = ["So it is $\\boxed{0.5}$.", "\\boxed{1/2}",
             "Therefore, the final answer is: $\\boxed{\\dfrac{2}{4}}$.", "\\boxed{4.0}",
             "so $x=3$ and \\boxed{3}", "\\boxed{-3}", "no box, 3"]
    tokens, pl, length = _rows(task, ps, texts, [0, 0, 0, 1, 2, 2, 2])
    ids = task.extract_answer(tokens, pl).tolist()
    a = ps.answers.tolist()
    assert ids[:3] == [a[0]] * 3 and ids[3] == a[1] and ids[4] == a[2]
    assert ids[5] not in a and ids[6] == INVALID_ANSWER
    gold = ps.gold[[0, 0, 0, 1, 2, 2, 2]]
    assert task.prefix_correct(tokens, pl, length, gold).tolist() == [
        True, True, True, True, True, False, False]


def test_jsonl_task_with_configured_fields(tok, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"q": "What is 6 times 7?", "a": "42", "d": 2},
        {"q": "Half of 3?", "a": "It is 3/2.\n1.5", "d": "Level 4"},
    ]))
    task = make_text_task("jsonl", tok, path=str(path), question_field="q", answer_field="a",
                          answer_format="number", difficulty_field="d", chat=False)
    ps = task.problems(2, seed=0, split="test")
    assert ps.difficulty.tolist() == [2, 4]
    assert tok.decode(ps.gold[0]) == "The answer is: 42"  # a bare answer has no steps
    assert tok.decode(ps.gold[1]) == "It is 3/2.\n\n1.5\n\nThe answer is: 1.5"
    tokens, pl, _ = _rows(task, ps, ["6 * 7 = 42", "3 / 2 = 1.50"], [0, 1])
    assert task.extract_answer(tokens, pl).tolist() == ps.answers.tolist()


def test_text_tasks_have_their_own_registry(tok, math_file):
    assert isinstance(make_text_task("math", tok, path=math_file), TextTask)
    with pytest.raises(ValueError, match="make_text_task"):
        make_task("gsm8k")
    with pytest.raises(ValueError, match="unknown text task"):
        make_text_task("aime", tok, path=math_file)
    with pytest.raises(ValueError, match="needs path"):
        make_text_task("gsm8k", tok)
