"""Answer extraction, gold answers and math-verify interning (ttc.tasks.answers), host-side."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ttc.tasks.answers import (
    AnswerInterner,
    answers_equal,
    extract_answer_text,
    gold_answer,
    is_plain_number,
    parse_answer,
)
from ttc.tasks.base import INVALID_ANSWER

GSM8K = Path(__file__).resolve().parents[1] / "../shared/data/gsm8k"


def _records(name: str) -> list[dict]:
    path = GSM8K / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- gold answers of the real data set -----------------------------------------------------

def test_every_gsm8k_test_gold_parses_and_verifies_against_itself():
    from math_verify import verify

    recs = _records("test.jsonl")
    assert len(recs) == 1319
    for r in recs:
        gold = gold_answer(r["answer"], "gsm8k")
        assert gold is not None and is_plain_number(gold) and "," not in gold, r["answer"]
        parsed = parse_answer(gold)
        assert parsed, gold
        assert verify(parsed, parsed, timeout_seconds=None), gold


def test_gsm8k_train_golds_are_plain_numbers_and_the_unusual_ones_parse():
    from math_verify import verify

    recs = _records("train.jsonl")
    assert len(recs) == 7473
    golds = [gold_answer(r["answer"], "gsm8k") for r in recs]
    assert all(g is not None and is_plain_number(g) for g in golds)
    raw = [r["answer"].rsplit("####", 1)[1].strip() for r in recs]
    unusual = sorted({g for g, w in zip(golds, raw, strict=True)
                      if not w.isdigit()} | set(golds[:100]))  # commas, signs, decimals
    for g in unusual:
        p = parse_answer(g)
        assert p and verify(p, p, timeout_seconds=None), g


# ---- extraction tables -----------------------------------------------------------------------

GSM8K_ROWS = [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("#### $18", "18"),
    ("The answer is: 42", "42"),
    ("So the answer is $1,234.50.", "1234.50"),
    ("The answer is -5.", "-5"),
    ("Therefore, the final answer is: $\\boxed{7}$.", "7"),
    ("The answer is 18.\nWait, 20 - 2 = 18.\nThe answer is 20", "20"),
    ("We get \\boxed{12} apples in total", "12"),
    ("3 + 4 = 7 apples. Then 7 * 2 = 14", "14"),
    ("x = 5-3 = 2", "2"),
    ("no numbers here", None),
]
NUMBER_ROWS = [
    ("1, 2, and 3", "3"),
    ("it costs $1,500.", "1500"),
    ("the result is 3.5.", "3.5"),
    ("-7", "-7"),
    ("5-3", "3"),
    ("1,2345", "2345"),
    ("x2 and 7", "7"),
    ("It is 0.5", "0.5"),
    (".75 left", ".75"),
    ("10 apples and 20 pears.", "20"),
    ("#### 18 then 19", "19"),
    ("no", None),
]
BOXED_ROWS = [
    ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("so $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed 5.", "5"),
    ("\\fbox{7}", "7"),
    ("Therefore, the final answer is: $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("\\boxed{x = 2}", "x = 2"),
    ("\\boxed{(1, 2)}", "(1, 2)"),
    ("$\\boxed{\\text{(A)}}$", "\\text{(A)}"),
    ("\\boxed{unclosed", None),
    ("The answer is 5", None),
]


@pytest.mark.parametrize("fmt,rows", [("gsm8k", GSM8K_ROWS), ("number", NUMBER_ROWS),
                                      ("boxed", BOXED_ROWS)])
def test_extraction_table(fmt, rows):
    got = [extract_answer_text(text, fmt) for text, _ in rows]
    assert got == [want for _, want in rows]


def test_gold_answer_of_record_fields():
    assert gold_answer("He has 2 + 3 = <<2+3=5>>5.\n#### 1,000", "gsm8k") == "1000"
    assert gold_answer("18", "gsm8k") == "18"
    assert gold_answer("So it is $\\boxed{\\frac{1}{2}}$.", "boxed") == "\\frac{1}{2}"
    assert gold_answer("\\frac{1}{2}", "boxed") == "\\frac{1}{2}"  # MATH's `answer` field
    assert gold_answer("$5$", "boxed") == "5"
    assert gold_answer("18", "number") == "18"
    assert gold_answer("It is 17.\nThen 18.", "number") == "18"
    with pytest.raises(ValueError, match="answer format"):
        gold_answer("1", "latex")
    with pytest.raises(ValueError, match="answer format"):
        extract_answer_text("1", "latex")


# ---- equivalences -------------------------------------------------------------------------------

# (a, b, math-verify says equal) — as observed with math-verify 0.9 (see ttc.tasks.answers).
EQUIVALENCES = [
    ("0.5", "\\frac{1}{2}", True),
    ("0.5", "1/2", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\dfrac12", "0.5", True),
    ("1,000", "1000", True),
    ("$5", "5", True),
    ("\\$5", "5", True),
    ("5.00", "5", True),
    ("18.", "18", True),
    ("1234.50", "1234.5", True),
    ("-3", "3", False),
    ("7", "8", False),
    ("1000000", "1000001", False),
    ("x = 2", "2", True),
    ("2", "x = 2", True),
    ("x = 2", "y = 2", False),
    ("50%", "50", True),
    ("50%", "0.5", True),
    ("50", "0.5", False),
    ("50\\%", "0.5", False),  # the escaped percent sign is dropped: plain 50
    ("1/3", "0.333333", True),  # floats compared rounded to 6 decimals
    ("1/3", "0.33", False),
    ("0.000001", "0.000002", False),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\{2\\}", "2", True),
    ("\\infty", "-\\infty", False),
    ("x+1", "1+x", True),
    ("x+1", "x+2", False),
    ("\\text{Monday}", "Monday", True),
    ("\\pi", "3.14159265", True),
    ("1, 2", "\\{1,2\\}", True),
    ("(1,2)", "\\{1,2\\}", True),  # the open interval equals the set
    ("1e3", "1000", False),  # read as 1*e*3
]


def test_verify_is_asymmetric_and_the_interner_puts_the_first_member_as_gold():
    assert answers_equal("1<x<2", "(1,2)") and not answers_equal("(1,2)", "1<x<2")
    interner = AnswerInterner()
    assert interner.intern("1<x<2") == interner.intern("(1,2)")
    interner = AnswerInterner()
    assert interner.intern("(1,2)") != interner.intern("1<x<2")


@pytest.mark.parametrize("a,b,equal", EQUIVALENCES)
def test_interner_ids_are_equal_exactly_for_math_verify_equivalent_answers(a, b, equal):
    interner = AnswerInterner()
    ia, ib = interner.intern(a), interner.intern(b)
    assert ia >= 0 and ib >= 0
    assert (ia == ib) == equal
    assert answers_equal(a, b) == equal  # the bucketing misses nothing math-verify would see


def test_boxed_extraction_then_interning():
    interner = AnswerInterner()
    ids = [interner.intern(extract_answer_text(t, "boxed"))
           for t in ("so \\boxed{\\frac{3}{4}}.", "\\boxed{0.75}", "\\boxed{3/4}", "\\boxed{4/3}")]
    assert ids == [0, 0, 0, 1]


def _brute_force_ids(answers: list[str]) -> list[int]:
    """The interner's contract without buckets: first representative that verifies, in order."""
    from math_verify import verify

    reps, out = [], []
    for a in answers:
        p = parse_answer(a)
        hit = next((i for i, r in enumerate(reps) if verify(r, p, timeout_seconds=None)), None)
        if hit is None:
            hit = len(reps)
            reps.append(p)
        out.append(hit)
    return out


def test_interner_matches_a_brute_force_scan_of_all_representatives():
    # numbers near bucket edges, fractions, percentages, a 1-set; irrationals last (each
    # brute-force comparison with them costs ~70 ms of sympy simplification)
    answers = ["18", "0.5", "\\frac{1}{2}", "1/2", "17.9999999", "18.0001", "-18", "1000",
               "999.9995", "999.9999996", "25\\%", "0.25", "25", "\\frac{1}{4}", "25%", "\\{2\\}",
               "2", "0.0000001", "0", "\\sqrt{2}", "1.414214", "\\frac{2}{\\sqrt{2}}"]
    interner = AnswerInterner()
    assert interner.intern_many(answers).tolist() == _brute_force_ids(answers)


def test_interner_ids_invalid_cached_and_stable():
    interner = AnswerInterner(max_chars=40)
    assert interner.intern(None) == INVALID_ANSWER
    assert interner.intern("") == INVALID_ANSWER
    assert interner.intern("   ") == INVALID_ANSWER
    assert interner.intern("#%&") == INVALID_ANSWER  # nothing parses
    assert interner.intern("1" * 41) == INVALID_ANSWER  # over max_chars
    assert interner.intern("9^{9^{9}}") == INVALID_ANSWER  # would stall sympy
    assert interner.intern("1000000!") == INVALID_ANSWER
    ids = interner.intern_many(["7", "\\frac{14}{2}", "8", "7.0", "8", "$7$"])
    assert ids.dtype.name == "int32" and ids.tolist() == [0, 0, 1, 0, 1, 0]
    assert len(interner) == 2 and interner.representative(0) == "7"
    parses = interner.parses
    assert interner.intern("\\frac{14}{2}") == 0 and interner.parses == parses  # cached
    assert interner.intern("7.000") == 0 and interner.parses == parses  # same decimal
    again = AnswerInterner()
    assert again.intern_many(["7", "\\frac{14}{2}", "8"]).tolist() == [0, 0, 1]


def test_the_interner_works_from_a_non_main_thread():
    from math_verify import parse

    out: dict[str, object] = {}

    def run():
        try:
            parse("$\\frac{1}{2}$")  # math-verify's default timeout uses signal.alarm
        except ValueError as e:
            out["default"] = e
        interner = AnswerInterner()
        out["ids"] = interner.intern_many(["\\frac{1}{2}", "0.5", "x = 3", "3", "4"]).tolist()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=120)
    assert "thread" in str(out.get("default", "")).lower()  # why timeouts are turned off
    assert out["ids"] == [0, 0, 1, 1, 2]
