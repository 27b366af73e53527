"""Text math benchmarks behind the :class:`~ttc.tasks.base.Task` protocol.

:class:`TextTask` reads a JSONL file of problems and serves them to ttc's samplers, search
methods and verifiers with a Hugging Face tokenizer (:class:`~ttc.tasks.hf_tokenizer.HFTokenizer`).
Constructors: :func:`gsm8k_task` (GSM8K, Cobbe et al. 2021, "Training Verifiers to Solve Math
Word Problems": fields ``question``, ``answer`` = worked solution ending ``#### N``),
:func:`math_task` (MATH, Hendrycks et al. 2021, "Measuring Mathematical Problem Solving With the
MATH Dataset": ``problem``, ``solution`` with ``\\boxed{}``, optional ``answer``, ``level`` such as
``"Level 3"``) and :func:`jsonl_task` (configurable fields); :func:`make_text_task` picks one by
name.

Conventions (in addition to those of :mod:`ttc.tasks.base`):

* Problems are the records of a fixed file in file order: ``problems(n, seed=..., split=...)``
  returns the *first* ``n`` (``seed`` does not reorder a fixed benchmark, so runs with any seed
  see the same problems; a larger ``n`` than the file holds is an error). ``split='test'`` reads
  ``path``; ``split='train'`` reads ``train_path`` minus its first ``k_shot`` records (those are
  the k-shot examples shown in every prompt).
* Prompts: the tokenizer's chat template (``chat=True`` and the tokenizer has one: a system
  message, the k-shot examples as user/assistant turns, the question) or plain text
  (``Question: …\\nAnswer:``), right-padded with ``PAD`` to ``max_prompt_len``. ``BOS`` is
  prepended only when the tokenizer itself adds it (``HFTokenizer.adds_bos``) and the chat
  template has not already written it.
* Steps are separated by ``step_delimiter`` (default the tokenizer's, ``"\\n\\n"``). The
  reference solution (``ProblemSet.gold``) is the record's worked solution with GSM8K calculator
  annotations ``<<…>>`` removed, its lines (``gsm8k``/``number`` formats) or paragraphs
  (``boxed``) joined by the delimiter, ending with the final-answer sentence the system prompt
  asks for and ``EOS``; right-padded with ``PAD`` to ``max_solution_len + 1``, or cut to
  ``max_solution_len`` tokens + ``EOS`` when longer (the cut loses the final answer; the task
  still knows each gold row's answer id).
* Answers: ids from the task's :class:`~ttc.tasks.answers.AnswerInterner` (math-verify
  equivalence classes, unbounded), gold answers interned first when problems are served.
  ``num_answers`` is ``2**31 - 1``, a bound, not a count.
* Answers are host work (``answers_on_host = True``, see :func:`ttc.tasks.base.answers_on_host`):
  :meth:`TextTask.extract_answer` and :meth:`TextTask.prefix_correct` take host arrays (NumPy,
  any leading shape, broadcast), decode each row's generated part with the tokenizer and parse
  it with math-verify. They are never traced: ttc's jitted samplers and searches leave answers
  out for such a task and their callers compute them once the device work has returned (a
  ``jax.pure_callback`` here deadlocked intermittently on multi-device CPU runs).
* There is no exact step checker for free text: :meth:`TextTask.prefix_correct` is an *outcome*
  oracle (a finished prefix is correct iff its final answer is; an unfinished one is always
  ``True``) and :meth:`TextTask.check_steps` marks every step with the final answer's verdict.

The task is a frozen dataclass compared and hashed by identity (it is a static argument of
jitted functions and holds a tokenizer and an interner).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from ttc.tasks.answers import FORMATS, AnswerInterner, extract_answer_text, gold_answer
from ttc.tasks.base import INVALID_ANSWER, ProblemSet, pad_to
from ttc.tasks.hf_tokenizer import HFTokenizer

_CALC = re.compile(r"<<[^<>]*>>")
_LEVEL = re.compile(r"-?\d+")

_BOXED_SYSTEM = (
    "Solve the following math problem efficiently and clearly. Think step by step and "
    "separate the steps with {sep}. Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{{answer}}$.\n\n"
    "Where [answer] is just the final number or expression that solves the problem.")
_NUMBER_SYSTEM = (
    "Solve the following math word problem step by step, separating the steps with {sep}. "
    "Always conclude with:\n\nThe answer is: N\n\nwhere N is just the final number.")


def final_sentence(answer: str, fmt: str) -> str:
    """The final-answer sentence the default system prompt asks for in format ``fmt``."""
    if fmt == "boxed":
        return f"Therefore, the final answer is: $\\boxed{{{answer}}}$."
    return f"The answer is: {answer}"


def default_system_prompt(fmt: str, delimiter: str = "\n\n") -> str:
    """The default system prompt: steps separated by ``delimiter`` and the final answer in the
    format's sentence (search-and-learn's MATH prompt for ``boxed``)."""
    sep = "a blank line" if delimiter == "\n\n" else f"{delimiter!r}"
    return (_BOXED_SYSTEM if fmt == "boxed" else _NUMBER_SYSTEM).format(sep=sep)


@dataclasses.dataclass(frozen=True)
class TextProblem:
    """One record of a text benchmark (host-side).

    Attributes:
        question: the problem statement.
        answer: the gold answer string.
        steps: the reference solution's steps (without the final-answer sentence).
        difficulty: the difficulty label.
        path: the file the record is in.
        line: its line number (1-based).
    """

    question: str
    answer: str
    steps: tuple[str, ...]
    difficulty: int
    path: str
    line: int


def _host(x: Any, what: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise TypeError(f"TextTask.{what} is host work (it decodes text): call it on concrete "
                        "arrays, outside jit (see ttc.tasks.base.answers_on_host)")
    return np.asarray(x)


def _fail(path: str, lineno: int | None, what: str) -> ValueError:
    where = f"{path}:{lineno}" if lineno is not None else path
    return ValueError(f"text task file {where}: {what}")


def read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-empty line of a JSONL file; ``ValueError`` naming
    the file (and line) when it is missing, unreadable or not JSON objects."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, None, f"cannot be read ({e.__class__.__name__}: {e}); give the path "
                    "of a JSONL file with one problem per line") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, i, f"is not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(rec, dict):
            raise _fail(path, i, f"is a JSON {type(rec).__name__}, not an object with fields")
        out.append((i, rec))
    if not out:
        raise _fail(path, None, "holds no records")
    return out


def reference_steps(solution: str, fmt: str) -> tuple[str, ...]:
    """Steps of a worked solution: calculator annotations ``<<…>>`` and the ``#### N`` line
    removed, then non-empty lines (``gsm8k``/``number``) or paragraphs (``boxed``)."""
    text = _CALC.sub("", solution)
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("####"))
    parts = re.split(r"\n\s*\n", text) if fmt == "boxed" else text.splitlines()
    return tuple(p.strip() for p in parts if p.strip())


def _difficulty(value: Any) -> int:
    """An int label from ``3``, ``"3"`` or ``"Level 3"``; 0 when there is no number
    (``"Level ?"``)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    m = _LEVEL.search(str(value))
    return int(m.group()) if m else 0


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class TextTask:
    """A text math benchmark as a :class:`~ttc.tasks.base.Task` (see module docstring).

    Attributes:
        tokenizer: an :class:`HFTokenizer` (a bare ``transformers`` tokenizer is wrapped).
        path: the test JSONL file.
        name: the task's name in records (``gsm8k``, ``math``, ``jsonl``, …).
        question_field: the record field holding the problem.
        answer_field: the field the gold answer is read from (:func:`gold_answer`).
        solution_field: the field holding the worked solution (default ``answer_field``); also
            the gold answer's fallback when a record lacks ``answer_field`` (MATH's optional
            ``answer``).
        answer_format: ``gsm8k``, ``number`` or ``boxed`` (:func:`extract_answer_text`).
        difficulty_field: a field with the difficulty (``3`` or ``"Level 3"``); default: the
            number of steps of the reference solution.
        train_path: JSONL of the train split and of the k-shot examples.
        k_shot: worked examples (the first records of ``train_path``) in every prompt.
        chat: use the tokenizer's chat template when it has one.
        system_prompt: instructions (default :func:`default_system_prompt`).
        max_new_tokens: the solution budget (``max_solution_len``).
        max_prompt_len: prompt width; default the longest prompt of both files (computing it
            encodes every prompt at construction: ~1 s per thousand GSM8K prompts here). A
            longer prompt is an error when problems are served.
        max_steps: most steps the step-level search runs.
        max_step_len: most tokens in one step (default ``max_new_tokens``).
        step_delimiter: the step separator (default the tokenizer's).
        interner: the answer interner (share one between tasks to share ids).
    """

    tokenizer: Any
    fixed_order: ClassVar[bool] = True
    """``problems(n)`` is the first ``n`` records whatever the seed (a fixed benchmark)."""
    answers_on_host: ClassVar[bool] = True
    """Answers are decoded and parsed on the host (:func:`ttc.tasks.base.answers_on_host`)."""

    path: str
    name: str = "jsonl"
    question_field: str = "question"
    answer_field: str = "answer"
    solution_field: str | None = None
    answer_format: str = "gsm8k"
    difficulty_field: str | None = None
    train_path: str | None = None
    k_shot: int = 0
    chat: bool = True
    system_prompt: str | None = None
    max_new_tokens: int = 256
    max_prompt_len: int | None = None
    max_steps: int = 32
    max_step_len: int | None = None
    step_delimiter: str | None = None
    interner: AnswerInterner = dataclasses.field(default_factory=AnswerInterner, repr=False)
    _state: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_config()
        tok = self.tokenizer
        if not isinstance(tok, HFTokenizer):
            tok = HFTokenizer(tok)
        if self.step_delimiter is not None:
            tok = tok.with_delimiter(self.step_delimiter)
        set_ = object.__setattr__
        set_(self, "tokenizer", tok)
        set_(self, "step_delimiter", tok.step_delimiter)
        if self.system_prompt is None:
            set_(self, "system_prompt", default_system_prompt(self.answer_format,
                                                              tok.step_delimiter))
        if self.max_step_len is None:
            set_(self, "max_step_len", self.max_new_tokens)
        self._state["test"] = self._load(self.path)
        if self.train_path is not None:
            train = self._load(self.train_path)
            if len(train) < self.k_shot:
                raise _fail(self.train_path, None, f"has {len(train)} records, fewer than "
                            f"k_shot={self.k_shot}")
            self._state["shots"] = train[: self.k_shot]
            self._state["train"] = train[self.k_shot :]
        else:
            self._state["shots"] = []
        self._state["gold_ids"] = {}
        if self.max_prompt_len is None:
            lens = [len(p) for s in ("test", "train") for p in self._prompts(s)]
            set_(self, "max_prompt_len", max(lens))

    def _check_config(self) -> None:
        if self.answer_format not in FORMATS:
            raise ValueError(f"answer_format must be one of {FORMATS}, got "
                             f"{self.answer_format!r}")
        if self.k_shot < 0:
            raise ValueError(f"k_shot must be >= 0, got {self.k_shot}")
        if self.k_shot > 0 and self.train_path is None:
            raise ValueError(f"k_shot={self.k_shot} needs train_path (the examples are its "
                             "first records)")
        for key in ("max_new_tokens", "max_steps", "max_step_len", "max_prompt_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")

    def description(self) -> dict[str, Any]:
        """The task's settings as JSON (records, config hashes): every field but the tokenizer
        and the interner, plus the tokenizer's name and the test file's size."""
        skip = {"tokenizer", "interner", "_state"}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in skip}
        out["tokenizer"] = str(getattr(self.tokenizer.hf, "name_or_path", "") or "")
        out["n_test"] = len(self._state["test"])
        return out

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def max_solution_len(self) -> int:
        return self.max_new_tokens

    @property
    def num_answers(self) -> int:
        """A bound on answer ids (they are interned, unbounded): ``2**31 - 1``."""
        return 2**31 - 1

    # ---- records ---------------------------------------------------------------------------
    def _field(self, path: str, lineno: int, rec: dict[str, Any], key: str) -> Any:
        if key not in rec:
            raise _fail(path, lineno, f"the record has no field {key!r} (it has "
                        f"{sorted(rec)}); name the right one with the task's "
                        "question_field / answer_field / difficulty_field settings")
        return rec[key]

    def _load(self, path: str) -> list[TextProblem]:
        out = []
        sol_key = self.solution_field or self.answer_field
        for lineno, rec in read_jsonl(path):
            question = str(self._field(path, lineno, rec, self.question_field))
            ans_key = self.answer_field if self.answer_field in rec or sol_key not in rec \
                else sol_key
            answer = gold_answer(str(self._field(path, lineno, rec, ans_key)), self.answer_format)
            if answer is None:
                raise _fail(path, lineno, f"field {ans_key!r} holds no {self.answer_format} "
                            "answer")
            solution = str(rec.get(sol_key, "")).strip()
            bare = sol_key == ans_key and "\n" not in solution and "####" not in solution
            steps = () if bare else reference_steps(solution, self.answer_format)
            difficulty = (_difficulty(self._field(path, lineno, rec, self.difficulty_field))
                          if self.difficulty_field else len(steps))
            out.append(TextProblem(question, answer, steps, difficulty, path, lineno))
        return out

    def records(self, split: str) -> list[TextProblem]:
        """The problems of ``split`` in file order (host-side)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split == "train" and "train" not in self._state:
            raise ValueError(f"task {self.name!r} has no train split; set train_path")
        return self._state[split]

    # ---- text ------------------------------------------------------------------------------
    def solution_text(self, p: TextProblem) -> str:
        """The reference solution: steps and the final-answer sentence, joined by the
        delimiter."""
        final = final_sentence(p.answer, self.answer_format)
        return self.step_delimiter.join([*p.steps, final])

    @property
    def uses_chat(self) -> bool:
        return self.chat and self.tokenizer.has_chat_template

    def messages(self, question: str, *, system_role: bool = True) -> list[dict[str, str]]:
        """Chat messages of a prompt: the system prompt (merged into the first user turn when
        ``system_role`` is off), the k-shot examples as user/assistant turns, the question."""
        turns = []
        for shot in self._state["shots"]:
            turns += [{"role": "user", "content": shot.question},
                      {"role": "assistant", "content": self.solution_text(shot)}]
        turns.append({"role": "user", "content": question})
        if system_role:
            return [{"role": "system", "content": self.system_prompt}, *turns]
        first = f"{self.system_prompt}\n\n{turns[0]['content']}"
        return [{"role": "user", "content": first}, *turns[1:]]

    def _chat_text(self, question: str) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return self.tokenizer.chat_text(self.messages(question))
        except TemplateError:  # a template without a system role (e.g. Gemma's) raises
            return self.tokenizer.chat_text(self.messages(question, system_role=False))

    def prompt_text(self, question: str) -> str:
        """The prompt of ``question`` as text: the rendered chat template, or plain text
        (``chat`` off or no template)."""
        if self.uses_chat:
            return self._chat_text(question)
        parts = [self.system_prompt]
        parts += [f"Question: {s.question}\nAnswer: {self.solution_text(s)}"
                  for s in self._state["shots"]]
        return "\n\n".join([*parts, f"Question: {question}\nAnswer:"])

    def _with_bos(self, ids: list[int]) -> list[int]:
        tok = self.tokenizer
        return [tok.BOS, *ids] if tok.adds_bos and (not ids or ids[0] != tok.BOS) else ids

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the prompt of ``question`` (unpadded)."""
        return self._with_bos(self.tokenizer.encode(self.prompt_text(question)))

    def _prompts(self, split: str, n: int | None = None) -> list[list[int]]:
        """Prompt ids of the first ``n`` (default all) problems of ``split``, cached."""
        if split == "train" and "train" not in self._state:
            return []
        recs = self.records(split)[:n]
        cache = self._state.setdefault(f"prompts/{split}", [])
        texts = [self.prompt_text(p.question) for p in recs[len(cache) :]]
        cache += [self._with_bos(ids) for ids in self.tokenizer.encode_batch(texts)]
        return cache[: len(recs)]

    # ---- problems --------------------------------------------------------------------------
    def problems(self, n: int, *, seed: int = 0, split: str = "test") -> ProblemSet:
        """The first ``n`` problems of ``split`` in file order (``seed`` is unused: a fixed
        benchmark is not reordered). Gold answers are interned here, in order."""
        del seed
        recs = self.records(split)
        if n < 1:
            raise ValueError(f"need n >= 1 problems, got {n}")
        if n > len(recs):
            where = self.path if split == "test" else self.train_path
            raise ValueError(f"asked for {n} {split} problems but {where} has only {len(recs)}"
                             + (f" after its {self.k_shot} k-shot examples" if split == "train"
                                and self.k_shot else ""))
        recs = recs[:n]
        prompts = self._prompts(split, n)
        for p, ids in zip(recs, prompts, strict=True):
            if len(ids) > self.max_prompt_len:
                raise _fail(p.path, p.line, f"the prompt has {len(ids)} tokens, more than "
                            f"max_prompt_len={self.max_prompt_len}; raise it or leave it unset")
        answers = self.interner.intern_many(p.answer for p in recs)
        gold = pad_to([self._gold_tokens(p) for p in recs], self.max_solution_len + 1,
                      self.tokenizer.PAD)
        for row, a in zip(gold, answers, strict=True):
            self._state["gold_ids"][self._gold_key(row)] = int(a)
        return ProblemSet(
            prompts=pad_to(prompts, self.max_prompt_len, self.tokenizer.PAD),
            prompt_len=np.array([len(x) for x in prompts], np.int32),
            answers=answers,
            difficulty=np.array([p.difficulty for p in recs], np.int32),
            gold=gold,
            texts=tuple(p.question for p in recs),
        )

    def _gold_tokens(self, p: TextProblem) -> list[int]:
        ids = self.tokenizer.encode(self.solution_text(p))[: self.max_solution_len]
        return [*ids, self.tokenizer.EOS]

    def _gold_key(self, row: np.ndarray) -> bytes:
        row = np.asarray(row, np.int32).reshape(-1)
        hit = np.flatnonzero(row == self.tokenizer.EOS)
        return row[: hit[0] + 1 if hit.size else row.size].tobytes()

    # ---- answers (host side) ---------------------------------------------------------------
    def answer_of_text(self, text: str) -> int:
        """Answer id of a decoded solution (host-side)."""
        return self.interner.intern(extract_answer_text(text, self.answer_format))

    def _generated(self, row: np.ndarray, start: int, end: int | None = None) -> str:
        return self.tokenizer.decode(row[start:end], skip_special_tokens=True)

    def _gold_id(self, row: np.ndarray) -> int:
        key = self._gold_key(row)
        hit = self._state["gold_ids"].get(key)
        if hit is None:
            hit = self.answer_of_text(self._generated(row, 0))
            self._state["gold_ids"][key] = hit
        return hit

    def extract_answer(self, tokens: np.ndarray, prompt_len: np.ndarray) -> np.ndarray:
        """Answer id of each row's generated part ``tokens[..., prompt_len:]`` (up to the first
        stop id), :data:`INVALID_ANSWER` when it has no answer (host arrays, leading axes
        broadcast; decode, :func:`extract_answer_text`, intern)."""
        tokens, prompt_len = _host(tokens, "extract_answer"), _host(prompt_len, "extract_answer")
        lead = np.broadcast_shapes(tokens.shape[:-1], prompt_len.shape)
        t = np.broadcast_to(tokens, lead + tokens.shape[-1:]).reshape(-1, tokens.shape[-1])
        pl = np.broadcast_to(prompt_len, lead).reshape(-1)
        out = [self.answer_of_text(self._generated(r, int(p))) for r, p in zip(t, pl, strict=True)]
        return np.asarray(out, np.int32).reshape(lead)

    def prefix_correct(self, tokens: np.ndarray, prompt_len: np.ndarray, length: np.ndarray,
                       gold: np.ndarray) -> np.ndarray:
        """Outcome oracle for ``tokens[..., prompt_len:length]``: a finished prefix (it holds a
        stop id) is correct iff its answer id equals the gold row's; an unfinished one is
        ``True`` (no exact step checker exists for free text). Host arrays, leading axes
        broadcast."""
        tokens, gold = _host(tokens, "prefix_correct"), _host(gold, "prefix_correct")
        prompt_len, length = _host(prompt_len, "prefix_correct"), _host(length, "prefix_correct")
        lead = np.broadcast_shapes(tokens.shape[:-1], prompt_len.shape, length.shape,
                                   gold.shape[:-1])
        t = np.broadcast_to(tokens, lead + tokens.shape[-1:]).reshape(-1, tokens.shape[-1])
        g = np.broadcast_to(gold, lead + gold.shape[-1:]).reshape(-1, gold.shape[-1])
        pl = np.broadcast_to(prompt_len, lead).reshape(-1)
        ln = np.broadcast_to(length, lead).reshape(-1)
        stops = np.asarray(self.tokenizer.stop_ids)
        out = np.ones(t.shape[0], bool)
        for i in range(t.shape[0]):
            gen = t[i, int(pl[i]) : max(int(ln[i]), int(pl[i]))]
            if np.isin(gen, stops).any():
                a = self.answer_of_text(self._generated(gen, 0))
                out[i] = a != INVALID_ANSWER and a == self._gold_id(g[i])
        return out.reshape(lead)

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Every step's verdict is the final answer's (an outcome label, host-side): steps are
        ``solution`` split at the delimiter."""
        steps = solution.split(self.step_delimiter)
        a = self.answer_of_text(solution)
        ok = a != INVALID_ANSWER and a == int(problems.answers[problem_index])
        return [ok] * len(steps)


# ---- constructors ----------------------------------------------------------------------------

def gsm8k_task(tokenizer: Any, path: str, **cfg: Any) -> TextTask:
    """GSM8K (Cobbe et al. 2021): ``question``, ``answer`` = worked solution ending ``#### N``;
    difficulty = reasoning lines of the reference solution."""
    cfg = {"name": "gsm8k", "question_field": "question", "answer_field": "answer",
           "answer_format": "gsm8k", **cfg}
    return TextTask(tokenizer=tokenizer, path=path, **cfg)


def math_task(tokenizer: Any, path: str, **cfg: Any) -> TextTask:
    """MATH (Hendrycks et al. 2021): ``problem``, ``solution`` with ``\\boxed{}``, optional
    ``answer`` (else the solution's last ``\\boxed{}``), ``level`` → difficulty."""
    cfg = {"name": "math", "question_field": "problem", "answer_field": "answer",
           "solution_field": "solution", "answer_format": "boxed", "difficulty_field": "level",
           **cfg}
    return TextTask(tokenizer=tokenizer, path=path, **cfg)


def jsonl_task(tokenizer: Any, path: str, **cfg: Any) -> TextTask:
    """Any JSONL: ``question_field``, ``answer_field``, ``answer_format`` (gsm8k|number|boxed),
    optional ``solution_field`` and ``difficulty_field``."""
    return TextTask(tokenizer=tokenizer, path=path, **{"name": "jsonl", **cfg})


TEXT_TASKS = {"gsm8k": gsm8k_task, "math": math_task, "jsonl": jsonl_task}


def make_text_task(name: str, tokenizer: Any, **cfg: Any) -> TextTask:
    """Builds a text task by name (``gsm8k``, ``math``, ``jsonl``); ``cfg`` must hold ``path``."""
    if name not in TEXT_TASKS:
        raise ValueError(f"unknown text task {name!r}; choose one of {sorted(TEXT_TASKS)}")
    if "path" not in cfg:
        raise ValueError(f"text task {name!r} needs path= (a JSONL file of test problems)")
    return TEXT_TASKS[name](tokenizer, **cfg)


__all__ = [
    "TEXT_TASKS", "TextProblem", "TextTask", "default_system_prompt", "final_sentence",
    "gsm8k_task", "jsonl_task", "make_text_task", "math_task", "read_jsonl", "reference_steps",
]
