"""A Hugging Face tokenizer behind the attributes ttc's samplers and tasks use.

:class:`HFTokenizer` wraps a ``transformers.PreTrainedTokenizerBase`` and exposes what the char
:class:`~ttc.tasks.base.Tokenizer` exposes (``PAD``, ``BOS``, ``EOS``, ``step_id``,
``vocab_size``, ``encode``, ``decode``) plus what real vocabularies need:

* ``stop_ids``: the end-of-sequence id and the chat end-of-turn id (``<|im_end|>``,
  ``<|eot_id|>``, ``<end_of_turn>``, …) when the vocabulary has one; a chat model ends its
  answer with the latter.
* Step ends. Steps are separated by ``step_delimiter`` (default ``"\\n\\n"``). With byte-level
  BPE the delimiter can sit *inside* a token (``".\\n\\n"``) or be *split* over two tokens
  (``"\\n"`` then ``"\\n"``). ``step_ids`` lists every id whose text contains the delimiter, and
  the boolean tables ``step_contains[V]``, ``ends_with_partial[V]``, ``starts_with_rest[V]``
  (text ends with the delimiter's first character / starts with the rest, for a 2-character
  delimiter) let a jitted sampler end a step at token ``t`` after token ``prev`` iff
  ``step_contains[t] | (ends_with_partial[prev] & starts_with_rest[t])`` (see
  :func:`step_end`). Limits: a delimiter spread over three or more tokens is not detected; a
  token containing the delimiter ends the step even if text follows the delimiter inside it;
  a run of three newlines can end two steps in a row. Longer delimiters have the general
  ``[L-1, V]`` tables ``ends_with_prefix`` / ``starts_with_suffix``.

The char tokenizer has none of the extra attributes; :func:`stop_ids_of` and
:func:`step_tables_of` return them for either kind (char tokenizer: ``(EOS,)``, and tables that
mark only ``step_id``).

Everything here is host-side NumPy/Python; the tables are meant to be passed into jitted code
as arrays (:func:`step_end` is jit-able).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eot|>",
                      "<|end_of_turn|>", "<|endofturn|>")
"""Chat end-of-turn tokens added to ``stop_ids`` when the vocabulary has them."""


class StepTables(NamedTuple):
    """``[V]`` bool tables of step ends (see module docstring)."""

    contains: np.ndarray
    ends_with_partial: np.ndarray
    starts_with_rest: np.ndarray


class HFTokenizer:
    """A ``transformers`` tokenizer with ttc's tokenizer attributes (host-side).

    Args:
        hf: the wrapped ``PreTrainedTokenizerBase`` (available as ``.hf``).
        step_delimiter: the text that ends a step (default ``"\\n\\n"``).
        vocab_size: the model's vocabulary size, if larger than ``len(hf)`` (an embedding
            table is often padded); ids at or beyond ``len(hf)`` decode to nothing and are in no
            table. Settable later (``tok.vocab_size = model_vocab``).
        eos_token: the primary stop token, if not the tokenizer's ``eos_token``.

    Attributes:
        PAD: ``pad_token_id``, else ``EOS``.
        BOS: ``bos_token_id``, or ``None`` when the tokenizer has none (e.g. Qwen).
        EOS: the primary stop id (``eos_token_id``, else the end-of-turn id).
        stop_ids: ``EOS`` first, then the end-of-turn id if the vocabulary has one.
        adds_bos: whether the tokenizer itself prepends ``BOS`` when asked to add special
            tokens (the model was trained with it); plain prompts get ``BOS`` only then.
    """

    def __init__(self, hf: Any, *, step_delimiter: str = "\n\n", vocab_size: int | None = None,
                 eos_token: str | None = None) -> None:
        if not step_delimiter:
            raise ValueError("step_delimiter must be a non-empty string")
        self.hf = hf
        self.step_delimiter = step_delimiter
        vocab = hf.get_vocab()
        turn = next((vocab[t] for t in END_OF_TURN_TOKENS if t in vocab), None)
        if eos_token is not None:
            if eos_token not in vocab:
                raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
            eos = vocab[eos_token]
        else:
            eos = hf.eos_token_id if hf.eos_token_id is not None else turn
        if eos is None:
            raise ValueError("the tokenizer has no eos_token and no end-of-turn token "
                             f"({', '.join(END_OF_TURN_TOKENS)}); pass eos_token=")
        self.EOS: int = int(eos)
        self.stop_ids: tuple[int, ...] = (self.EOS,) + (
            (int(turn),) if turn is not None and turn != self.EOS else ())
        self.PAD: int = int(hf.pad_token_id) if hf.pad_token_id is not None else self.EOS
        self.BOS: int | None = int(hf.bos_token_id) if hf.bos_token_id is not None else None
        ids = hf("x", add_special_tokens=True)["input_ids"] if self.BOS is not None else []
        self.adds_bos: bool = bool(ids) and ids[0] == self.BOS
        self._n = len(hf)
        self._texts: list[str] | None = None
        self._tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._vocab_size = self._n
        if vocab_size is not None:
            self.vocab_size = vocab_size

    def __repr__(self) -> str:
        return (f"HFTokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size}, "
                f"step_delimiter={self.step_delimiter!r}, stop_ids={self.stop_ids})")

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the id space (``len(hf)`` unless set to the model's embedding size)."""
        return self._vocab_size

    @vocab_size.setter
    def vocab_size(self, value: int) -> None:
        specials = [self.PAD, *self.stop_ids] + ([self.BOS] if self.BOS is not None else [])
        if value <= max(specials):
            raise ValueError(f"vocab_size {value} does not cover the special ids {specials}")
        self._vocab_size = int(value)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def with_delimiter(self, step_delimiter: str) -> HFTokenizer:
        """The same tokenizer with another step delimiter (shares ``hf``)."""
        if step_delimiter == self.step_delimiter:
            return self
        eos = self.hf.convert_ids_to_tokens(self.EOS)
        return HFTokenizer(self.hf, step_delimiter=step_delimiter, vocab_size=self.vocab_size,
                           eos_token=eos)

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added (special-token text such as
        ``<|im_end|>`` inside ``text`` is still read as that token)."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Any, *, skip_special_tokens: bool = False,
               stop: bool = True) -> str:
        """Text of ``ids``: stops at the first stop id (unless ``stop=False``), drops ``PAD`` and
        ids outside the tokenizer (``< 0`` or ``>= len(hf)``)."""
        out: list[int] = []
        stops = set(self.stop_ids) if stop else set()
        for i in np.asarray(ids).reshape(-1).tolist():
            if i in stops:
                break
            if i != self.PAD and 0 <= i < self._n:
                out.append(i)
        return self.hf.decode(out, skip_special_tokens=skip_special_tokens,
                              clean_up_tokenization_spaces=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of many texts at once (the fast tokenizer batches them)."""
        if not texts:
            return []
        return [list(x) for x in self.hf(list(texts), add_special_tokens=False)["input_ids"]]

    def chat_text(self, messages: Sequence[dict[str, str]], *,
                  add_generation_prompt: bool = True) -> str:
        """``messages`` rendered with the tokenizer's chat template, as text."""
        if not self.has_chat_template:
            raise ValueError("the tokenizer has no chat template; use chat=False")
        return self.hf.apply_chat_template(list(messages), tokenize=False,
                                           add_generation_prompt=add_generation_prompt)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], *,
                            add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered with the tokenizer's chat template (whatever
        special tokens the template writes, e.g. ``BOS``, are included; nothing is added), as
        ``transformers``' own ``apply_chat_template(tokenize=True)`` does."""
        return self.encode(self.chat_text(messages, add_generation_prompt=add_generation_prompt))

    # ---- step tables ----------------------------------------------------------------------------
    @property
    def token_texts(self) -> list[str]:
        """The decoded text of every id ``< len(hf)`` (special tokens as written)."""
        if self._texts is None:
            self._texts = self.hf.batch_decode([[i] for i in range(self._n)],
                                               skip_special_tokens=False,
                                               clean_up_tokenization_spaces=False)
        return self._texts

    def _build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v, d = self.vocab_size, self.step_delimiter
        if v in self._tables:
            return self._tables[v]
        contains = np.zeros(v, bool)
        ends = np.zeros((max(len(d) - 1, 0), v), bool)
        starts = np.zeros((max(len(d) - 1, 0), v), bool)
        special = set(getattr(self.hf, "all_special_ids", ()))
        for i, text in enumerate(self.token_texts[:v]):
            if i in special or not text:
                continue
            contains[i] = d in text
            for j in range(1, len(d)):
                ends[j - 1, i] = text.endswith(d[:j])
                starts[j - 1, i] = text.startswith(d[j:])
        self._tables[v] = (contains, ends, starts)
        return self._tables[v]

    @property
    def step_contains(self) -> np.ndarray:
        """``[V]`` bool: the token's text contains the delimiter."""
        return self._build()[0]

    @property
    def ends_with_prefix(self) -> np.ndarray:
        """``[L-1, V]`` bool: row ``j`` marks texts ending with ``delimiter[:j+1]``."""
        return self._build()[1]

    @property
    def starts_with_suffix(self) -> np.ndarray:
        """``[L-1, V]`` bool: row ``j`` marks texts starting with ``delimiter[j+1:]``."""
        return self._build()[2]

    def _two_token(self, table: np.ndarray) -> np.ndarray:
        if len(self.step_delimiter) == 1:
            return np.zeros(self.vocab_size, bool)
        if len(self.step_delimiter) > 2:
            raise ValueError(f"the [V] split tables are for 1- or 2-character delimiters; "
                             f"{self.step_delimiter!r} has {len(self.step_delimiter)}: use "
                             "ends_with_prefix / starts_with_suffix")
        return table[0]

    @property
    def ends_with_partial(self) -> np.ndarray:
        """``[V]`` bool: the text ends with the delimiter's first character (2-char delimiter;
        all ``False`` for a 1-char one)."""
        return self._two_token(self.ends_with_prefix)

    @property
    def starts_with_rest(self) -> np.ndarray:
        """``[V]`` bool: the text starts with the delimiter's second character."""
        return self._two_token(self.starts_with_suffix)

    @property
    def step_ids(self) -> tuple[int, ...]:
        """Every id whose text contains the delimiter: the id whose text *is* the delimiter
        first (if any), then the others in increasing order."""
        ids = np.flatnonzero(self.step_contains).tolist()
        exact = [i for i in ids if self.token_texts[i] == self.step_delimiter]
        return tuple(exact + [i for i in ids if i not in exact])

    @property
    def step_id(self) -> int:
        """The first of :attr:`step_ids` (for code that takes one step token), ``-1`` (matches
        nothing) when no single token contains the delimiter."""
        ids = self.step_ids
        return ids[0] if ids else -1


# ---- helpers for either tokenizer kind ----------------------------------------------------------

def stop_ids_of(tok: Any) -> tuple[int, ...]:
    """The ids that end a solution: ``tok.stop_ids`` if it has them, else ``(tok.EOS,)``."""
    return tuple(getattr(tok, "stop_ids", (tok.EOS,)))


def step_tables_of(tok: Any, vocab_size: int | None = None) -> StepTables:
    """``[V]`` step-end tables of ``tok`` (``V = vocab_size or tok.vocab_size``).

    An :class:`HFTokenizer` gives its tables (cut or padded with ``False`` to ``V``); any other
    tokenizer (the char :class:`~ttc.tasks.base.Tokenizer`) gives ``contains`` marking only
    ``tok.step_id`` and all-``False`` split tables.
    """
    v = int(vocab_size or tok.vocab_size)

    def fit(a: np.ndarray) -> np.ndarray:
        out = np.zeros(v, bool)
        out[: min(v, a.shape[0])] = a[:v]
        return out

    if isinstance(tok, HFTokenizer):
        return StepTables(fit(tok.step_contains), fit(tok.ends_with_partial),
                          fit(tok.starts_with_rest))
    contains = np.zeros(v, bool)
    if 0 <= tok.step_id < v:
        contains[tok.step_id] = True
    return StepTables(contains, np.zeros(v, bool), np.zeros(v, bool))


def step_end(prev: Int[Array, "*B"], cur: Int[Array, "*B"],
             tables: StepTables) -> Bool[Array, "*B"]:
    """Whether token ``cur`` (after ``prev``) ends a step (jit-able; ids outside the tables never
    do): ``contains[cur] | (ends_with_partial[prev] & starts_with_rest[cur])``."""
    c, e, s = (jnp.asarray(t) for t in tables)
    v = c.shape[0]

    def look(table, ids):
        return jnp.where((ids >= 0) & (ids < v), table[jnp.clip(ids, 0, v - 1)], False)

    return look(c, cur) | (look(e, prev) & look(s, cur))


__all__ = ["END_OF_TURN_TOKENS", "HFTokenizer", "StepTables", "step_end", "step_tables_of",
           "stop_ids_of"]
