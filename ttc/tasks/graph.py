"""Functional-graph walks ("pointer chasing"): multi-hop lookups with a scratchpad.

A problem is a random *functional graph* on ``num_nodes`` nodes named ``a, b, c, …``: every
node has exactly one outgoing edge ``x → f(x)``, drawn uniformly among the other nodes (no
self-loops, so a walk never stalls). The prompt lists all edges ``xy`` (meaning ``x → y``) in a
random order, then ``|``, the start node, the hop count and ``=``; the solution follows the
pointers one hop per step and ends with ``!`` and the node reached:

    prompt    ``ab,cf,bd,dc,fa,ec|a3=``        (start ``a``, 3 hops)
    solution  ``ab;bd;dc!c``                      then ``EOS``; the answer is ``c`` (id 2)

Each step ``xy`` copies the current node ``x`` and looks up its successor ``y`` in the edge
list, so every step is checkable on its own and one wrong lookup sends the walk down a wrong
path for good (errors compound with the number of hops, the difficulty label). Walks may enter
a cycle; the answer is still unique.

Why a second task: arithmetic chains compute each step from two operands that sit *in order* in
the prompt and a memorised operation table; here every step is a *lookup* of a pointer chosen by
the previous step, composed ``k`` times — the pointer-chasing / multi-hop setting used to probe
compositional depth in transformers (pointer-value retrieval, Zhang et al. 2021; ``k``-hop
induction heads, Sanford et al. 2024). Errors are retrieval slips rather than arithmetic slips,
and the same samplers, verifiers and search code run on it unchanged.

Edge order (``shuffle_edges``): random per problem by default, so a lookup is content-addressed
(find the edge whose source is ``x``, copy the token after it: an induction-head retrieval,
Olsson et al. 2022). With ``shuffle_edges=False`` the edges are sorted by source, node ``x``'s
edge sits at a fixed position and a lookup is positional (classic pointer chasing in an array),
which is much easier. Measured with the default tiny policy (2 layers, d=64, conf/policy/tiny):
shuffled, 6 nodes, 2-8 hops: validation accuracy ~0.2-0.3 (chance is 1/5) until ~400 SFT steps,
then 0.39 / 0.59 / 0.97 at steps 500 / 600 / 700; shuffled with 10 nodes: still guessing after
600 steps; sorted, 10 nodes, 2-12 hops: 0.11 at step 150, 0.71 at step 200, 0.97 at step 250.

The walk is deterministic, so the correct solution is unique: the exact step checker is a prefix
comparison with the reference solution (jit-able, used by the oracle PRM), and independently a
re-walk of the edge list parsed from the prompt text (:meth:`GraphWalkTask.check_steps`).
"""

from __future__ import annotations

import dataclasses
import string

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ttc.tasks.base import (
    INVALID_ANSWER,
    Drawn,
    ProblemSet,
    Tokenizer,
    UniqueSolutionTask,
)

_NODES = string.ascii_lowercase  # node names; node i is _NODES[i] and has answer id i
_EDGE_SEP, _QUERY, _END_PROMPT = ",", "|", "="
_STEP, _ANSWER = ";", "!"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GraphWalkTask(UniqueSolutionTask):
    """Pointer chasing in a random functional graph (see module docstring).

    Attributes:
        num_nodes: nodes per graph, named by the first ``num_nodes`` letters (2..26); it is also
            the number of answer ids (node ``i`` ↔ id ``i``). The vocabulary always holds all 26
            letters, so policies trained with different ``num_nodes`` share one tokenizer.
        min_hops: fewest hops in a problem (difficulty lower bound), >= 1.
        max_hops: most hops in a problem (difficulty upper bound), <= 99.
        shuffle_edges: list the edges in a random order (every lookup is content-addressed) or,
            if false, sorted by source node (a lookup is positional: classic pointer chasing in
            an array).
        test_fraction: share of the problem space reserved for the test split, by a stable hash
            of the problem (graph, start, hops; not of the edge order), so the splits are
            disjoint whatever the seeds and a test graph never appears in training reordered.
    """

    num_nodes: int = 6
    min_hops: int = 2
    max_hops: int = 8
    shuffle_edges: bool = True
    test_fraction: float = 0.2
    name: str = "graph"
    _widen = "the hops range or num_nodes"  # (class attribute, not a field)

    def __post_init__(self) -> None:
        if not 2 <= self.num_nodes <= len(_NODES):
            raise ValueError(f"num_nodes must be in [2, {len(_NODES)}], got {self.num_nodes}")
        if not 1 <= self.min_hops <= self.max_hops:
            raise ValueError(
                f"need 1 <= min_hops <= max_hops, got {self.min_hops}, {self.max_hops}"
            )
        if self.max_hops > 99:
            raise ValueError(f"max_hops must be <= 99, got {self.max_hops}")
        if not isinstance(self.shuffle_edges, bool):
            raise ValueError(f"shuffle_edges must be true or false, got {self.shuffle_edges!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    # ---- vocabulary and sizes -------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(
            alphabet=_NODES + "0123456789" + _EDGE_SEP + _QUERY + _END_PROMPT + _STEP + _ANSWER,
            step_delimiter=_STEP,
        )

    @property
    def num_answers(self) -> int:
        return self.num_nodes

    @property
    def _hop_digits(self) -> int:
        return len(str(self.max_hops))

    @property
    def max_prompt_len(self) -> int:
        # BOS, n edges 'xy' joined by ',', '|', start, hop digits, '='
        return 1 + (3 * self.num_nodes - 1) + 1 + 1 + self._hop_digits + 1

    @property
    def max_solution_len(self) -> int:
        # steps 'xy' joined by ';', then '!', answer, EOS
        return 3 * self.max_hops + 2

    @property
    def max_steps(self) -> int:
        return self.max_hops

    @property
    def max_step_len(self) -> int:
        """Tokens in the longest step: the final ``xy!y`` + ``EOS``."""
        return 5

    # ---- problems ---------------------------------------------------------------------------
    @staticmethod
    def _walk(succ: list[int], start: int, hops: int) -> tuple[str, int]:
        """Reference solution text and answer id of a walk (``succ[i]`` is node i's successor)."""
        x, steps = start, []
        for _ in range(hops):
            y = succ[x]
            steps.append(_NODES[x] + _NODES[y])
            x = y
        return _STEP.join(steps) + _ANSWER + _NODES[x], x

    def _prompt(self, succ: list[int], order: list[int], start: int, hops: int) -> str:
        edges = _EDGE_SEP.join(_NODES[i] + _NODES[succ[i]] for i in order)
        return f"{edges}{_QUERY}{_NODES[start]}{hops}{_END_PROMPT}"

    def _draw(self, rng: np.random.Generator) -> Drawn:
        m = self.num_nodes
        k = int(rng.integers(self.min_hops, self.max_hops + 1))
        # successor of i uniform over the other nodes: shift i by 1..m-1 (no self-loops)
        succ = ((np.arange(m) + rng.integers(1, m, size=m)) % m).tolist()
        start = int(rng.integers(m))
        order = rng.permutation(m).tolist() if self.shuffle_edges else list(range(m))
        key = "".join(_NODES[s] for s in succ) + f"{_QUERY}{_NODES[start]}{k}"  # canonical
        sol, ans = self._walk(succ, start, k)
        return Drawn(key=key, prompt=self._prompt(succ, order, start, k), solution=sol,
                     answer=ans, difficulty=k)

    @staticmethod
    def parse_prompt(text: str) -> tuple[dict[str, str], str, int]:
        """``(successor map, start node, hops)`` of a prompt string such as ``ab,ba|a3=``."""
        edges, query = text.rstrip(_END_PROMPT).split(_QUERY)
        succ = {e[0]: e[1] for e in edges.split(_EDGE_SEP)}
        return succ, query[0], int(query[1:])

    # ---- verification -------------------------------------------------------------------
    def extract_answer(
        self, tokens: Int[Array, "B T"], prompt_len: Int[Array, " B"]
    ) -> Int[Array, " B"]:
        """The node letter between the first generated ``!`` and ``EOS``; else invalid.

        Valid iff a ``!`` occurs after the prompt and before the first generated ``EOS``, and
        it is followed by exactly one node letter (``< num_nodes``) and then ``EOS``.
        """
        tok = self.tokenizer
        _, t = tokens.shape
        pos = jnp.arange(t)[None, :]
        gen = pos >= prompt_len[:, None]
        is_eos = (tokens == tok.EOS) & gen
        eos_pos = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1), t)
        is_bang = (tokens == tok.token_id(_ANSWER)) & gen
        has_bang = is_bang.any(axis=1)
        bang_pos = jnp.argmax(is_bang, axis=1)
        idx = jnp.clip(bang_pos[:, None] + jnp.arange(1, 3)[None, :], 0, t - 1)
        window = jnp.take_along_axis(tokens, idx, axis=1)  # [B, 2]: answer, EOS
        value = window[:, 0] - tok.token_id(_NODES[0])
        ok = (
            has_bang
            & (bang_pos < eos_pos)
            & (bang_pos + 2 < t)
            & (value >= 0)
            & (value < self.num_nodes)
            & (window[:, 1] == tok.EOS)
        )
        return jnp.where(ok, value, INVALID_ANSWER).astype(jnp.int32)

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Re-walks the edge list parsed from the prompt text (independent of the reference)."""
        succ, x, hops = self.parse_prompt(problems.texts[problem_index])
        steps = solution.split(_STEP)
        verdicts, ok = [], True
        for k, step in enumerate(steps):
            last = k == len(steps) - 1
            expect = None
            if k < hops and x in succ:
                y = succ[x]
                expect = x + y + (_ANSWER + y if k == hops - 1 else "")
                x = y
            step_ok = expect is not None and step == expect and last == (k == hops - 1)
            ok = ok and step_ok
            verdicts.append(ok)
        return verdicts
