"""Final answers of text math tasks: extraction from generated text and math-verify interning.

Everything here runs on the host (plain Python, no JAX): text tasks call it once the jitted
samplers have returned (see :mod:`ttc.tasks.text`), never from inside a jitted computation.

* :func:`extract_answer_text` finds the final answer in a generated solution, in one of three
  formats: ``gsm8k`` (``#### N`` as in GSM8K, Cobbe et al. 2021, "Training Verifiers to Solve
  Math Word Problems"; or "The answer is N"), ``number`` (the last number) and ``boxed``
  (``\\boxed{...}`` as in MATH, Hendrycks et al. 2021, "Measuring Mathematical Problem Solving
  With the MATH Dataset").
* :func:`gold_answer` reads the reference answer of a data-set record.
* :class:`AnswerInterner` maps answer strings to integer ids such that answers that
  `math-verify <https://github.com/huggingface/Math-Verify>`_ judges equal share one id, so
  majority votes (:mod:`ttc.search.aggregate`, which compares ids) group equivalent answers.

math-verify's default timeouts use ``signal.alarm``, which raises outside the main thread; every
call here passes ``parsing_timeout=None`` / ``timeout_seconds=None``. Instead of a timeout, the
interner refuses (as :data:`INVALID_ANSWER`) answers longer than ``max_chars`` and expressions
whose value would have more than ``max_digits`` digits (``9^{9^9}``, ``10^6!``), the inputs that
were seen to stall sympy; an exotic input can in principle still be slow.

Behaviour of math-verify 0.9 observed here (``verify(gold, pred)``, both parsed by ``parse``;
the tests in ``tests/test_answers.py`` pin these):

* ``0.5``, ``\\frac{1}{2}``, ``1/2``, ``\\dfrac12`` are equal; ``1/3`` equals ``0.333333`` but
  not ``0.33`` (floats are compared rounded to 6 decimals, so ``\\pi`` equals ``3.14159265``
  and ``0.000001`` differs from ``0.000002``); ``5.00`` equals ``5``; ``-3`` differs from ``3``;
  ``\\sqrt{8}`` equals ``2\\sqrt{2}`` (symbolic simplification).
* ``1,000`` (a thousands separator) equals ``1000``, but inside ``$...$`` ``1,5`` is the set
  ``{1, 5}``; :func:`normalize_number` strips thousands commas before parsing.
* ``$5``, ``\\$5``, ``5\\text{ cm}`` parse to ``5``.
* ``x = 2`` equals ``2`` in both directions (an assignment is unwrapped to its right-hand
  side), but ``x = 2`` differs from ``y = 2``. Parsed without ``$...$`` anchors, ``x = 2`` is
  already read as ``2``.
* ``50%`` is ``50 * (1/100)`` and equals both ``50`` and ``0.5``, while ``50`` and ``0.5``
  differ: equality is not transitive, so an interned class is "equal to its first member"
  (see :class:`AnswerInterner`). ``50\\%`` (escaped) parses to plain ``50`` and does not
  equal ``0.5``.
* ``\\{2\\}`` equals ``2``; ``1, 2`` equals ``\\{1,2\\}``, and so does ``(1,2)`` (parsed as
  the open interval); ``x+1`` equals ``1+x``; ``\\text{Monday}`` equals ``Monday``;
  ``-\\infty`` differs from ``\\infty``; ``1e3`` is read as ``1 \\cdot e \\cdot 3``, not 1000.
* Text that holds no expression (``#%&``) parses to a bare string fallback; the interner treats
  that as unparseable.
* ``verify`` is asymmetric (e.g. ``1<x<2`` as gold equals ``(1,2)``, not the reverse); the
  interner always passes the class's first member as ``gold``.
* Bare LaTeX without ``$`` (``\\sqrt{2}``, ``\\pi``) is not extracted at all and ``10^{3}``
  is read as ``10``; the interner wraps non-numeric answers in ``$...$``.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from collections.abc import Hashable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from ttc.tasks.base import INVALID_ANSWER

FORMATS = ("gsm8k", "number", "boxed")

# A number: optional sign and '$', digits with optional thousands commas, optional decimals.
# Not preceded by a word character or '.', so ``x2`` and the ``2`` of ``1.2`` are not numbers.
_NUMBER = re.compile(
    r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])-?\.\d+")
_PLAIN_NUMBER = re.compile(
    r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\.?|[-+]?\.\d+")
_GSM8K_MARK = re.compile(r"####\s*(.*)")
_ANSWER_IS = re.compile(r"(?:the\s+final\s+answer|the\s+answer|final\s+answer)\s+is\s*:?\s*(.*)",
                        re.IGNORECASE)
_DOLLAR_ANSWER = re.compile(r"final\s+answer\s+is\s*:?\s*\$+([^$]+)\$", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_INTEGER = re.compile(r"-?\d+")


# ---- extraction ---------------------------------------------------------------------------

def normalize_number(text: str) -> str:
    """A number string without ``$``, thousands commas, spaces, a leading ``+`` or a trailing
    ``.``: ``"$1,000."`` → ``"1000"``."""
    s = text.strip().replace("$", "").replace(",", "").replace(" ", "")
    s = s.rstrip(".")
    return s[1:] if s.startswith("+") else s


def is_plain_number(text: str) -> bool:
    """Whether ``text`` is one number (``-1,234.5``, ``$18``, ``18.``) and nothing else."""
    return _PLAIN_NUMBER.fullmatch(text.strip()) is not None


def last_number(text: str) -> str | None:
    """The last number in ``text``, normalized (see :func:`normalize_number`), or ``None``."""
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def first_number(text: str) -> str | None:
    """The first number in ``text``, normalized, or ``None``."""
    m = _NUMBER.search(text)
    return normalize_number(m.group()) if m else None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces
    balanced; ``\\boxed 5`` (no braces) gives ``5``. ``None`` when there is none or it is
    unclosed."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    return text[start + 1 : i].strip()
        else:
            m = re.match(r"[^\s$]+", text[start:])
            if m:
                return m.group().rstrip(".")
    return None


def _clean(answer: str) -> str:
    """A plain number is normalized; anything else is only stripped (and ``$...$`` unwrapped)."""
    a = answer.strip()
    if is_plain_number(a):
        return normalize_number(a)
    if len(a) > 1 and a.startswith("$") and a.endswith("$"):
        a = a.strip("$").strip()
    return a


def _after_answer_is(text: str) -> str | None:
    """The answer after the last "The answer is" / "final answer is" (rest of that line)."""
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    rest = found[-1]
    boxed = last_boxed(rest)
    if boxed is not None:
        return _clean(boxed)
    return first_number(rest)


def extract_answer_text(text: str, fmt: str) -> str | None:
    """The final answer in generated ``text`` (host-side), or ``None`` when there is none.

    Args:
        text: a generated solution (decoded, special tokens removed).
        fmt: ``gsm8k``: the number after the last ``####``, else after the last "The answer is"
            / "final answer is" (a ``\\boxed{}`` there wins), else the last ``\\boxed{}``,
            else the last number. ``number``: the last number. ``boxed``: the last
            ``\\boxed{...}`` (balanced braces), else the ``$...$`` after "final answer is".

    Returns:
        The answer string: numbers are normalized (``$`` and thousands commas removed,
        ``1,000`` → ``1000``, trailing ``.`` dropped); a boxed answer is returned as written
        (plain numbers inside it normalized).
    """
    if fmt == "number":
        return last_number(text)
    if fmt == "boxed":
        boxed = last_boxed(text)
        if boxed is not None:
            return _clean(boxed) or None
        found = _DOLLAR_ANSWER.findall(text)
        return (_clean(found[-1]) or None) if found else None
    if fmt == "gsm8k":
        marks = _GSM8K_MARK.findall(text)
        if marks:
            return first_number(marks[-1]) or (_clean(marks[-1]) or None)
        said = _after_answer_is(text)
        if said:
            return said
        boxed = last_boxed(text)
        if boxed:
            return _clean(boxed)
        return last_number(text)
    raise ValueError(f"answer format must be one of {FORMATS}, got {fmt!r}")


def gold_answer(record_answer: str, fmt: str) -> str | None:
    """The reference answer in a data-set field (host-side).

    Args:
        record_answer: the record's answer field: a GSM8K worked solution ending ``#### N``, a
            MATH ``solution`` with ``\\boxed{}``, or a bare answer (MATH's ``answer`` field,
            ``"18"``).
        fmt: ``gsm8k``: the text after the last ``####`` (a bare one-line answer as is, a
            ``\\boxed{}`` if present, else the last number); ``boxed``: the last ``\\boxed{}``,
            else the whole field (a bare answer); ``number``: the field if it is a number, else
            its last number.

    Returns:
        The answer string (plain numbers normalized), or ``None`` when there is none.
    """
    s = record_answer.strip()
    if fmt == "gsm8k":
        if "####" in s:
            return _clean(s.rsplit("####", 1)[1]) or None
        boxed = last_boxed(s)
        if boxed is not None:
            return _clean(boxed) or None
        return (_clean(s) or None) if "\n" not in s else last_number(s)
    if fmt == "boxed":
        boxed = last_boxed(s)
        return _clean(boxed if boxed is not None else s) or None
    if fmt == "number":
        return normalize_number(s) if is_plain_number(s) else last_number(s)
    raise ValueError(f"answer format must be one of {FORMATS}, got {fmt!r}")


# ---- math-verify ------------------------------------------------------------------------------

def parse_answer(answer: str) -> list[Any]:
    """math-verify's parse of an answer string (no timeout; host-side).

    A plain number is normalized and parsed as an expression; anything else is parsed as LaTeX
    inside ``$...$`` unless it already has an unescaped ``$`` or a ``\\boxed`` (falling back to
    the raw string). Returns math-verify's list (sympy objects
    and strings), empty when nothing parses.
    """
    from math_verify import parse

    s = answer.strip()
    if not s:
        return []
    if is_plain_number(s):
        num = normalize_number(s)
        if _INTEGER.fullmatch(num):  # what parse() returns for an integer, 20x faster
            import sympy

            return [sympy.Integer(int(num)), str(int(num))]
        return parse(num, parsing_timeout=None)
    anchored = _UNESCAPED_DOLLAR.search(s) is not None or "\\boxed" in s
    out = parse(s if anchored else f"${s}$", parsing_timeout=None)
    return out or parse(s, parsing_timeout=None)


def answers_equal(gold: str, pred: str) -> bool:
    """math-verify's ``verify(parse(gold), parse(pred))`` without timeouts (host-side)."""
    from math_verify import verify

    g, p = parse_answer(gold), parse_answer(pred)
    return bool(g and p and verify(g, p, timeout_seconds=None))


def _log10_size(e: Any) -> float:
    """A rough upper bound on log10 of the magnitude of a sympy expression (inf if astronomic)."""
    import sympy

    if isinstance(e, sympy.Integer):
        return abs(int(e)).bit_length() * 0.30103
    if isinstance(e, sympy.Rational):
        return max(abs(e.p).bit_length(), abs(e.q).bit_length()) * 0.30103
    if isinstance(e, sympy.Float):
        return math.log10(abs(float(e)) + 1.0)
    if isinstance(e, sympy.Pow):
        base, exp = e.args
        le = _log10_size(exp)
        if le > 12:
            return math.inf
        return max(_log10_size(base), 1.0) * 10.0**le
    if isinstance(e, sympy.factorial):
        ln = _log10_size(e.args[0])
        if ln > 12:
            return math.inf
        n = 10.0**ln
        return n * max(math.log10(n + 1.0), 1.0)
    args = getattr(e, "args", ())
    if not args:
        return 0.0
    sizes = [_log10_size(a) for a in args if hasattr(a, "args")]
    if not sizes:
        return 0.0
    return sum(sizes) if isinstance(e, sympy.Mul) else max(sizes) + 1.0


def _too_big(parsed: list[Any], max_digits: int) -> bool:
    import sympy

    for p in parsed:
        if isinstance(p, sympy.Basic):
            try:
                if _log10_size(p) > max_digits:
                    return True
            except (TypeError, ValueError, OverflowError, RecursionError):
                return True
    return False


# ---- bucketing: equal answers must share a key --------------------------------------------------

def _num_key(value: complex | float, tag: str = "n") -> Hashable:
    v = value.real if isinstance(value, complex) else value
    if not math.isfinite(v) or abs(v) >= 1e12:
        return ("huge",)
    return (tag, math.floor(v * 1000.0))


def _probe_keys(keys: set[Hashable]) -> list[Hashable]:
    """Keys to look up for a new answer: numeric buckets and their neighbours (equal numbers
    differ by < 1e-6, buckets are 1e-3 wide)."""
    out: list[Hashable] = []
    for k in keys:
        if len(k) == 2 and isinstance(k[1], int):
            out += [(k[0], k[1] - 1), k, (k[0], k[1] + 1)]
        else:
            out.append(k)
    return out


def _symbol_point(name: str) -> float:
    return 0.5 + (zlib.crc32(name.lower().encode()) % 1000) / 1371.0


def _expr_keys(e: Any) -> set[Hashable]:
    """Bucket keys of one parsed sympy object: a superset heuristic mirroring which kinds of
    objects math-verify can find equal (numbers by value, percentages also by value/100,
    relations by their right-hand side, sets/tuples/intervals/matrices together, symbol words
    together, expressions in variables by their value at a fixed point)."""
    import sympy
    from math_verify.grader import get_pct_val, is_relation, take_last_relation

    if is_relation(e):
        return {("struct",)} | _expr_keys(take_last_relation(e).rhs)
    if isinstance(e, sympy.MatrixBase) or isinstance(e, (sympy.Set, sympy.Tuple)):
        keys: set[Hashable] = {("struct",)}
        items = list(e.args) if isinstance(e, (sympy.FiniteSet, sympy.Tuple)) else []
        if len(items) == 1:
            keys |= _expr_keys(items[0])
        return keys
    pct = get_pct_val(e)
    if pct is not None:
        return {_num_key(complex(pct.evalf())), _num_key(complex((pct / 100).evalf()))}
    if isinstance(e, sympy.Symbol) or e == sympy.E or (
            isinstance(e, sympy.Mul)
            and all(isinstance(a, sympy.Symbol) or a == sympy.E for a in e.args)):
        return {("word",)} | ({_num_key(math.e)} if e == sympy.E else set())
    free = getattr(e, "free_symbols", set())
    if free:
        point = {s: _symbol_point(s.name) for s in free}
        return {_num_key(complex(e.subs(point).evalf()), "fx")}
    return {_num_key(complex(e.evalf()))}


def _keys_of(parsed: list[Any]) -> set[Hashable]:
    keys: set[Hashable] = set()
    for p in parsed:
        if isinstance(p, str):
            keys.add(("str", p.strip()))
            continue
        try:
            keys |= _expr_keys(p)
        except Exception:  # sympy raises many kinds; fall back to one bucket
            keys.add(("other",))
    return keys


class AnswerInterner:
    """Maps answer strings to int ids; math-verify-equal answers share one id (host-side).

    A new answer gets the id of the first existing class whose *first member* (its
    representative) math-verify judges equal to it — ``verify(representative, answer)``, the
    representative in the ``gold`` position — else a new id. Ids are ``0, 1, 2, …`` (non-negative
    int32) in order of first appearance, so they are stable within a process for a given
    insertion order; tasks intern gold answers first, making the gold the representative of its
    class. math-verify's equality is not transitive (``50%`` equals ``50`` and ``0.5``), so which
    class an answer joins can depend on insertion order.

    ``None``, empty, unparseable (math-verify finds no expression, only at most a string
    fallback such as ``'#%&'``), over-long (``max_chars``) and astronomically large
    (``max_digits``) answers are :data:`INVALID_ANSWER` (``-1``).

    Cost (measured on a shared 2-core CPU): an exact string seen before is a dictionary lookup
    (~1 µs); a plain number equal as a decimal to one seen before (``1,234`` after ``1234``)
    is a regex and a lookup (~5 µs; this shortcut gives ``50.0`` the id of ``50`` even where
    math-verify would tell them apart against a percentage); a new integer ~0.2-0.4 ms (no
    parser), a new decimal ~1 ms, a new LaTeX answer ~4-10 ms: one math-verify ``parse`` plus a
    ``verify`` against the few representatives that share a bucket with it (numbers by value,
    see :func:`_expr_keys`; a brute-force scan of all classes costs ~1-70 ms per class).
    Thread-safe (one lock; no math-verify timeout, i.e. no ``signal.alarm``, so any thread may
    call it).

    Args:
        max_chars: longer answers are invalid.
        max_digits: answers whose value would have more digits are invalid.
    """

    def __init__(self, *, max_chars: int = 256, max_digits: int = 100_000) -> None:
        self.max_chars = max_chars
        self.max_digits = max_digits
        self._lock = threading.RLock()
        self._by_text: dict[str, int] = {}
        self._by_decimal: dict[Decimal, int] = {}
        self._reps: list[tuple[str, list[Any]]] = []
        self._buckets: dict[Hashable, list[int]] = {}
        self.parses = 0
        self.verifies = 0

    def __len__(self) -> int:
        """Number of classes (ids handed out)."""
        return len(self._reps)

    def representative(self, answer_id: int) -> str:
        """The first answer string interned with ``answer_id``."""
        return self._reps[answer_id][0]

    def intern(self, answer: str | None) -> int:
        """The id of ``answer`` (a new one if no existing class is equal), or
        :data:`INVALID_ANSWER`."""
        if answer is None:
            return INVALID_ANSWER
        with self._lock:
            hit = self._by_text.get(answer)
            if hit is None:
                hit = self._intern_new(answer)
                self._by_text[answer] = hit
            return hit

    def intern_many(self, answers: Iterable[str | None]) -> np.ndarray:
        """``int32`` ids of ``answers``, in order."""
        return np.array([self.intern(a) for a in answers], np.int32).reshape(-1)

    def _decimal(self, s: str) -> Decimal | None:
        if not is_plain_number(s):
            return None
        try:
            return Decimal(normalize_number(s))
        except InvalidOperation:
            return None

    def _intern_new(self, answer: str) -> int:
        s = answer.strip()
        if not s or len(s) > self.max_chars:
            return INVALID_ANSWER
        dec = self._decimal(s)
        if dec is not None and dec in self._by_decimal:
            return self._by_decimal[dec]
        self.parses += 1
        parsed = parse_answer(s)
        if not any(not isinstance(p, str) for p in parsed) or _too_big(parsed, self.max_digits):
            return INVALID_ANSWER
        keys = _keys_of(parsed)
        found = self._match(parsed, keys)
        if found is None:
            found = len(self._reps)
            self._reps.append((s, parsed))
            for k in keys:
                self._buckets.setdefault(k, []).append(found)
        if dec is not None:
            self._by_decimal[dec] = found
        return found

    def _match(self, parsed: list[Any], keys: set[Hashable]) -> int | None:
        from math_verify import verify

        candidates = sorted({i for k in _probe_keys(keys) for i in self._buckets.get(k, ())})
        for i in candidates:
            self.verifies += 1
            if verify(self._reps[i][1], parsed, timeout_seconds=None):
                return i
        return None


__all__ = [
    "FORMATS", "AnswerInterner", "answers_equal", "extract_answer_text", "gold_answer",
    "is_plain_number", "last_boxed", "last_number", "normalize_number", "parse_answer",
]
