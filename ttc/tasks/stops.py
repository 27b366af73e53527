"""Which generated tokens end a step and which end a solution, as one static rule.

Samplers (:mod:`ttc.decode`), the search loop and reward scoring read step and solution ends only
through a :class:`StopRule`, built from a task's tokenizer by :func:`stop_rule`:

* The char tokenizer of the synthetic tasks: one step token and one ``EOS``
  (``StopRule(step_ids=(step_id,), eos_ids=(EOS,))``); the tests are single comparisons, as
  before.
* A Hugging Face tokenizer (:class:`ttc.tasks.hf_tokenizer.HFTokenizer`): every id whose text
  contains the step delimiter (``"\\n\\n"`` can sit inside a BPE token such as ``".\\n\\n"``),
  plus the two-token case (a token ending with the delimiter's first character followed by one
  starting with the rest); solutions end at ``EOS`` or the chat end-of-turn token.

A rule is frozen and hashable (a static jit argument); its methods are traceable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int


def _member(tokens: Int[Array, "*B"], ids: tuple[int, ...]) -> Bool[Array, "*B"]:
    if not ids:
        return jnp.zeros(jnp.shape(tokens), bool)
    if len(ids) == 1:
        return tokens == ids[0]
    return jnp.isin(tokens, jnp.asarray(ids, jnp.int32))


@dataclasses.dataclass(frozen=True, kw_only=True)
class StopRule:
    """Step and solution ends of a vocabulary.

    Attributes:
        step_ids: ids whose text contains the step delimiter (end a step on their own).
        eos_ids: ids that end a solution (``EOS``, a chat end-of-turn token).
        split_first: ids whose text ends with the delimiter's first part.
        split_second: ids whose text starts with the rest; a ``split_second`` token right after
            a ``split_first`` token of the solution ends a step.
    """

    step_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]
    split_first: tuple[int, ...] = ()
    split_second: tuple[int, ...] = ()

    def is_eos(self, tokens: Int[Array, "*B"]) -> Bool[Array, "*B"]:
        """Whether each token ends a solution."""
        return _member(tokens, self.eos_ids)

    def is_step_end(
        self,
        tokens: Int[Array, "*B"],
        prev: Int[Array, "*B"] | None = None,
        prev_in_solution: Bool[Array, "*B"] | bool = True,
    ) -> Bool[Array, "*B"]:
        """Whether each token ends a step (not counting ``EOS``).

        Args:
            tokens: the tokens.
            prev: the token before each (needed only for a split delimiter).
            prev_in_solution: whether ``prev`` was generated (a prompt ending with ``"\\n"``
                does not make the solution's first token a step end).
        """
        end = _member(tokens, self.step_ids)
        if self.split_first and prev is not None:
            end = end | (_member(prev, self.split_first) & _member(tokens, self.split_second)
                         & prev_in_solution)
        return end

    def is_end(self, tokens, prev=None, prev_in_solution=True) -> Bool[Array, "*B"]:
        """Step end or solution end."""
        return self.is_step_end(tokens, prev, prev_in_solution) | self.is_eos(tokens)

    def ends_in_tokens(
        self, tokens: Int[Array, "B T"], start: Int[Array, " B"]
    ) -> Bool[Array, "B T"]:
        """``[B, T]``: which positions of each row end a step or the solution, for solutions
        that begin at ``start`` (the prompt length)."""
        prev = jnp.concatenate([jnp.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
        pos = jnp.arange(tokens.shape[1])[None, :]
        return self.is_end(tokens, prev, pos - 1 >= start[:, None])


def stop_rule(tokenizer: Any) -> StopRule:
    """The :class:`StopRule` of a task's tokenizer (char or Hugging Face)."""
    from ttc.tasks.hf_tokenizer import HFTokenizer, stop_ids_of

    if not isinstance(tokenizer, HFTokenizer):
        return StopRule(step_ids=(int(tokenizer.step_id),), eos_ids=stop_ids_of(tokenizer))
    ids = lambda table: tuple(int(i) for i in np.flatnonzero(table))  # noqa: E731
    return StopRule(step_ids=ids(tokenizer.step_contains), eos_ids=stop_ids_of(tokenizer),
                    split_first=ids(tokenizer.ends_with_partial),
                    split_second=ids(tokenizer.starts_with_rest))


__all__ = ["StopRule", "stop_rule"]
