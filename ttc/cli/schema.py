"""The typed schema of the whole configuration, checked once before a job starts.

:func:`validate` turns the composed configuration into a :class:`RunConfig`, or raises
:class:`~ttc.errors.ConfigError` with one paragraph that names the key (a dotted path such as
``eval.top_p``), the value given and what is allowed. It checks

* types: an integer is not a string, a list is not a scalar, ``true`` is not ``1``, numbers
  are finite;
* ranges: positive sizes, ``0 < eval.top_p <= 1``, ``eval.top_k >= 0``, seeds ``>= 0``,
  fractions in ``[0, 1]``, ...;
* keys: an unknown key (``+eval.n_problem=3``) or a missing one is an error;
* constraints between sections: a given policy checkpoint has the task's vocabulary and enough
  positions for its prompts and solutions; the test and training splits hold enough distinct
  problems; every ``methods`` entry passes the method registry (:func:`ttc.methods.make_spec`,
  :func:`ttc.methods.check_budgets`) and labels are unique; the policy configs named by
  ``reward.base`` and ``reproduce.large_policy`` exist and are valid; a reproduction's method
  labels are in the grid; ``out_dir``, ``cache_dir`` (and ``save_to``) are writable.

Each section is a frozen dataclass whose fields carry their allowed values (:class:`Rule`);
:func:`parse_section` checks a mapping against one and then calls the section's
``check(path)`` for rules between its fields. Validation writes nothing: writability is
probed with a temporary file, removed at once, in the nearest existing parent directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ttc import checkpoint
from ttc.distributed import MODES as DIST_MODES
from ttc.distributed import WEEK_S, DistributedConfig, check_settings
from ttc.errors import ConfigError
from ttc.evaluate import EvalConfig
from ttc.hub.reward import FORMATS
from ttc.methods import MethodSpec, check_budgets, make_spec
from ttc.parallel import Layout
from ttc.tasks import TASKS, TEXT_TASKS, make_task, make_text_task
from ttc.tasks.base import Task
from ttc.tasks.subset_sum import count_problems
from ttc.tasks.sudoku import count_problems as count_sudoku_problems
from ttc.train import TrainConfig
from ttc.train_reward import LabelConfig, val_problems

COMMANDS = ("run", "train", "reproduce")
"""The entry points: ``ttc-run``, ``ttc-train``, ``ttc-reproduce``."""

REWARD_HEADS = ("lm_value", "scalar")
REWARD_FORMATS = tuple(f.name for f in FORMATS)
"""``reward=hf`` formats (:data:`ttc.hub.reward.FORMATS`)."""
WANDB_MODES = ("offline", "online", "disabled")
SPACE_CAP = 10**18
"""Problem counts of the task sections' ``space()`` stop here (more than any job draws)."""
_DRAW_MARGIN = 10
"""A task split estimated to hold fewer distinct problems than this many times the number a
job draws from it is drawn once during validation, to prove that it holds enough."""


def _conf_dir() -> Path:
    """The Hydra config directory: ``ttc/conf`` inside an installed wheel, else the source
    checkout's top-level ``conf/`` (an editable install or a plain checkout). Absolute, so the
    console scripts find it from any working directory."""
    pkg = Path(__file__).resolve().parent.parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"ttc's Hydra configs are missing: neither {pkg / 'conf'} nor "
                       f"{pkg.parent / 'conf'} holds config.yaml; reinstall ttc")


CONF_DIR = str(_conf_dir())


def _version_base() -> dict[str, None]:
    import hydra

    major, minor = (int(x) for x in hydra.__version__.split(".")[:2])
    return {"version_base": None} if (major, minor) < (1, 4) else {}


VERSION_BASE = _version_base()
"""Keyword arguments for ``hydra.main`` / ``initialize_config_dir``: the installed Hydra's own
defaults. Hydra 1.2-1.3 need ``version_base=None`` for that (omitting it warns and selects 1.1
behaviour); Hydra 1.4 deprecates the argument, and omitting it means the same."""


# ---- field rules and the generic parser ---------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """The allowed values of one field, beyond its type.

    Attributes:
        ge: smallest allowed number (inclusive), ``None``: unbounded.
        gt: exclusive lower bound.
        le: largest allowed number (inclusive).
        lt: exclusive upper bound.
        choices: the allowed strings.
        nonempty: a string or a list must not be empty.
        unique: a list must not repeat a value.
        parse: a parser ``(value, key) -> value`` that replaces the type check.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    nonempty: bool = False
    unique: bool = False
    parse: Callable[[Any, str], Any] | None = None

    def admits(self, v: Any) -> bool:
        """Whether ``v`` (of the right type) is within the bounds and choices."""
        if self.choices is not None:
            return v in self.choices
        if isinstance(v, str):
            return bool(v) or not self.nonempty
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def bounds(self) -> str:
        """The numeric bounds in words: ``''``, ``' >= 0'``, ``' in (0, 1]'``."""
        lo = (None if self.ge is None and self.gt is None
              else ("[", self.ge) if self.gt is None else ("(", self.gt))
        hi = (None if self.le is None and self.lt is None
              else ("]", self.le) if self.lt is None else (")", self.lt))
        if lo and hi:
            return f" in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
        if lo:
            return f" {'>=' if lo[0] == '[' else '>'} {_num(lo[1])}"
        if hi:
            return f" {'<=' if hi[0] == ']' else '<'} {_num(hi[1])}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _rule(**rule: Any) -> dict[str, Rule]:
    """Field metadata holding a :class:`Rule`."""
    return {"rule": Rule(**rule)}


def _field(*, default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with its :class:`Rule`; without ``default`` the key is required."""
    return dataclasses.field(default=default, metadata=_rule(**rule))


_NOUNS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a finite number", "finite numbers"), str: ("a string", "strings")}
_SIGNS = {1: "positive", 0: "non-negative"}


def _wants(tp: type, rule: Rule, *, plural: bool = False) -> str:
    """What ``rule`` allows for a scalar of type ``tp``, in words."""
    if rule.choices is not None:
        return f"one of {list(rule.choices)}"
    if tp is int and rule.ge in _SIGNS and rule.gt is rule.le is rule.lt is None:
        return f"{_SIGNS[int(rule.ge)]} integers" if plural else f"a {_SIGNS[int(rule.ge)]} integer"
    if tp is str and rule.nonempty:
        return "non-empty strings" if plural else "a non-empty string"
    return _NOUNS[tp][plural] + rule.bounds()


def _scalar_ok(tp: type, v: Any, rule: Rule) -> bool:
    if tp is bool:
        ok = isinstance(v, bool)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif tp is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    else:
        ok = isinstance(v, str)
    return ok and rule.admits(v)


def _as_text(tp: type, v: Any) -> Any:
    """An integer where a string is wanted (``name=2024``) is read as its digits."""
    return str(v) if tp is str and isinstance(v, int) and not isinstance(v, bool) else v


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of an annotation such as ``int | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _describe(hint: Any, rule: Rule) -> str:
    """What a field of annotation ``hint`` and ``rule`` allows, in words."""
    tp, optional = _unwrap(hint)
    tail = " or null" if optional else ""
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {_names(tp)}{tail}"
    if typing.get_origin(tp) is tuple:
        (elem, *_) = typing.get_args(tp)
        if dataclasses.is_dataclass(elem):
            return f"a list of mappings with keys {_names(elem)}{tail}"
        size = "a non-empty list" if rule.nonempty else "a list"
        return f"{_wants(elem, rule, plural=True)} ({size}){tail}"
    if tp in _NOUNS:
        return _wants(tp, rule) + tail
    return f"a {getattr(tp, '__name__', tp)}{tail}"


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any, key: str, rule: Rule) -> Any:
    """``value`` checked against annotation ``hint`` and ``rule`` (nested sections parsed)."""
    if rule.parse is not None:
        return rule.parse(value, key)
    tp, optional = _unwrap(hint)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    if typing.get_origin(tp) is tuple:
        (elem, *_) = typing.get_args(tp)
        if dataclasses.is_dataclass(elem) and isinstance(value, list | tuple):
            return tuple(parse_section(elem, v, f"{key}[{i}]") for i, v in enumerate(value))
        items = ([_as_text(elem, v) for v in value] if isinstance(value, list | tuple)
                 else None)
        if (items is None or (rule.nonempty and not items)
                or not all(_scalar_ok(elem, v, rule) for v in items)):
            raise ConfigError(f"{key} must be {_describe(hint, rule)}, got {value!r}")
        if rule.unique and len(set(items)) < len(items):
            raise ConfigError(f"{key} must not repeat a value, got {value!r}")
        return tuple(items)
    value = _as_text(tp, value)
    if not _scalar_ok(tp, value, rule):
        raise ConfigError(f"{key} must be {_describe(hint, rule)}, got {value!r}")
    return value


def _unknown_key(path: str, key: object, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.75)
    hint = f" (did you mean {_join(path, close[0])}?)" if close else ""
    return ConfigError(f"{_join(path, key)} is not a configuration key{hint}; "
                       f"{path or 'the top level'} takes {', '.join(names)}")


def parse_section(cls: type, data: Any, path: str) -> Any:
    """Checks the mapping ``data`` against the section dataclass ``cls`` at dotted ``path``.

    Every key must be a field of ``cls``; every field without a default must be given; each
    value must have the field's type and satisfy its :class:`Rule`. The section's own
    ``check(path)``, if it has one, then checks rules between its fields.

    Returns:
        The ``cls`` instance.

    Raises:
        ConfigError: naming the first offending key, its value and what is allowed.
    """
    names = _names(cls)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'the configuration'} must be a mapping with keys "
                          f"{names}, got {data!r}")
    for k in data:
        if k not in names:
            raise _unknown_key(path, k, names)
    values = {}
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("rule", Rule())
        if f.name in data:
            values[f.name] = _convert(_hints(cls)[f.name], data[f.name], _join(path, f.name),
                                      rule)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, f.name)} is missing; it must be "
                              f"{_describe(_hints(cls)[f.name], rule)}")
    try:
        section = cls(**values)
    except (TypeError, ValueError) as e:  # a library dataclass's own checks
        raise ConfigError(f"{path}: {e}") from None
    check = getattr(section, "check", None)
    if callable(check):
        check(path)
    return section


def _in_group(sections: Mapping[str, type] | type, group: str) -> Callable[[Any, str], Any]:
    """A parser for the section of a Hydra config group such as ``task``: one section class,
    or one per choice, picked by the ``name`` key. Messages end with the choice, e.g.
    ``(task: arithmetic)``."""

    def parse(value: Any, key: str) -> Any:
        name = value.get("name") if isinstance(value, Mapping) else None
        if isinstance(sections, type):
            cls = sections
        elif isinstance(name, str) and name in sections:
            cls = sections[name]
        else:
            raise ConfigError(f"{key}.name must be one of {sorted(sections)} (choose with "
                              f"{group}=NAME), got {name!r}")
        try:
            return parse_section(cls, value, key)
        except ConfigError as e:
            raise ConfigError(f"{e} ({group}: {name})" if isinstance(name, str) and name
                              else str(e)) from None

    return parse


# ---- sections -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithmeticSection:
    """``task=arithmetic``: modular arithmetic chains (:class:`ttc.tasks.ArithmeticTask`)."""

    name: str = _field(choices=("arithmetic",))
    min_ops: int = _field(ge=1)
    max_ops: int = _field(ge=1)
    modulus: int = _field(ge=2, le=1000)
    test_fraction: float = _field(gt=0, lt=1)

    def check(self, path: str) -> None:
        if self.max_ops < self.min_ops:
            raise ConfigError(f"{path}.max_ops must be >= {path}.min_ops={self.min_ops}, got "
                              f"{self.max_ops}")

    def space(self) -> int:
        """Distinct problems, capped at :data:`SPACE_CAP`: ``modulus**(k+1)`` operand and
        ``3**k`` operator choices for each number of operations ``k``."""
        total = 0
        for k in range(self.min_ops, self.max_ops + 1):
            total += self.modulus ** (k + 1) * 3 ** k
            if total >= SPACE_CAP:
                return SPACE_CAP
        return total


@dataclasses.dataclass(frozen=True, kw_only=True)
class GraphSection:
    """``task=graph``: pointer chasing in functional graphs (:class:`ttc.tasks.GraphWalkTask`)."""

    name: str = _field(choices=("graph",))
    num_nodes: int = _field(ge=2, le=26)
    min_hops: int = _field(ge=1, le=99)
    max_hops: int = _field(ge=1, le=99)
    shuffle_edges: bool
    test_fraction: float = _field(gt=0, lt=1)

    def check(self, path: str) -> None:
        if self.max_hops < self.min_hops:
            raise ConfigError(f"{path}.max_hops must be >= {path}.min_hops={self.min_hops}, "
                              f"got {self.max_hops}")

    def space(self) -> int:
        """Distinct problems, capped at :data:`SPACE_CAP`: graphs without self-loops, start
        nodes and hop counts."""
        n = self.num_nodes
        return min(SPACE_CAP, (n - 1) ** n * n * (self.max_hops - self.min_hops + 1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubsetSumSection:
    """``task=subset_sum``: subset sum with a unique solution (:class:`ttc.tasks.SubsetSumTask`).
    """

    name: str = _field(choices=("subset_sum",))
    min_numbers: int = _field(ge=1, le=10)
    max_numbers: int = _field(ge=1, le=10)
    max_value: int = _field(ge=1, le=99)
    test_fraction: float = _field(gt=0, lt=1)

    def check(self, path: str) -> None:
        if self.max_numbers < self.min_numbers:
            raise ConfigError(f"{path}.max_numbers must be >= {path}.min_numbers="
                              f"{self.min_numbers}, got {self.max_numbers}")

    def space(self) -> int:
        """Distinct problems (:func:`ttc.tasks.subset_sum.count_problems`), capped at
        :data:`SPACE_CAP`."""
        return min(SPACE_CAP, count_problems(self.min_numbers, self.max_numbers,
                                             self.max_value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SudokuSection:
    """``task=sudoku``: 4x4 mini-sudoku with a unique completion (:class:`ttc.tasks.SudokuTask`).
    """

    name: str = _field(choices=("sudoku",))
    min_blanks: int = _field(ge=1, le=12)
    max_blanks: int = _field(ge=1, le=12)
    test_fraction: float = _field(gt=0, lt=1)

    def check(self, path: str) -> None:
        if self.max_blanks < self.min_blanks:
            raise ConfigError(f"{path}.max_blanks must be >= {path}.min_blanks="
                              f"{self.min_blanks}, got {self.max_blanks}")

    def space(self) -> int:
        """Distinct problems, exact (:func:`ttc.tasks.sudoku.count_problems`)."""
        return count_sudoku_problems(self.min_blanks, self.max_blanks)


def _existing_file(key: str, raw: str | None) -> None:
    if raw is None:
        return
    path = Path(raw).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"{key}={raw!r} {what} (resolved to {path.absolute()}); give a "
                          "readable JSONL file")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTaskSection:
    """``task=gsm8k|math|jsonl``: a text benchmark read from JSONL files
    (:class:`ttc.tasks.TextTask`); built with the pretrained policy's tokenizer (``policy=hf``).
    """

    name: str = _field(choices=("gsm8k", "math", "jsonl"))
    path: str = _field(nonempty=True)
    train_path: str | None = None
    k_shot: int = _field(default=0, ge=0)
    chat: bool = True
    system_prompt: str | None = None
    max_new_tokens: int = _field(default=256, ge=1)
    max_steps: int = _field(default=32, ge=1)
    step_delimiter: str = _field(default="\n\n", nonempty=True)
    question_field: str | None = _field(default=None, nonempty=True)
    answer_field: str | None = _field(default=None, nonempty=True)
    answer_format: str | None = _field(default=None, choices=("gsm8k", "number", "boxed"))
    solution_field: str | None = _field(default=None, nonempty=True)
    difficulty_field: str | None = _field(default=None, nonempty=True)

    def check(self, path: str) -> None:
        _existing_file(f"{path}.path", self.path)
        _existing_file(f"{path}.train_path", self.train_path)
        if self.k_shot and self.train_path is None:
            raise ConfigError(f"{path}.k_shot={self.k_shot} needs {path}.train_path (the "
                              "examples are its first records)")
        if self.name != "jsonl":
            given = [f for f in ("question_field", "answer_field", "answer_format",
                                 "solution_field", "difficulty_field") if getattr(self, f)]
            if given:
                raise ConfigError(f"{path}.{given[0]} is for task=jsonl; task={self.name} "
                                  "has fixed field names")

    def build(self, tokenizer: Any) -> Task:
        """The task, with ``tokenizer`` (an :class:`ttc.tasks.HFTokenizer`)."""
        kw = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return make_text_task(kw.pop("name"), tokenizer, **kw)


TASK_SECTIONS: dict[str, type] = {"arithmetic": ArithmeticSection, "graph": GraphSection,
                                  "subset_sum": SubsetSumSection, "sudoku": SudokuSection,
                                  **dict.fromkeys(TEXT_TASKS, TextTaskSection)}
"""The schema of each task; a registered task without one is checked by its own dataclass."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshSection:
    """``policy.mesh`` / ``reward.mesh``: the ``data x model`` device mesh a model runs on
    (:class:`ttc.parallel.Layout`): ``model`` devices split its heads and MLP (tensor
    parallelism), ``data`` slices split the problems; local devices ``first ..
    first + data * model - 1``. ``data: null`` takes every device from ``first`` on."""

    data: int | None = _field(default=None, ge=1)
    model: int = _field(default=1, ge=1)
    first: int = _field(default=0, ge=0)

    @property
    def default(self) -> bool:
        """Every device on ``data``: the samplers' default, no layout to set."""
        return self.data is None and self.model == 1 and self.first == 0

    def layout(self, devices: int, key: str) -> Layout:
        """The layout on a process with ``devices`` local devices.

        Raises:
            ConfigError: the mesh needs more devices than there are, naming ``key``.
        """
        data = self.data if self.data is not None else (devices - self.first) // self.model
        need = self.first + max(data, 1) * self.model
        if data < 1 or need > devices:
            cpu = (" (on a CPU host, split it into more devices with host_devices=N, e.g. "
                   f"host_devices={need})")
            raise ConfigError(
                f"{key}={{data: {self.data}, model: {self.model}, first: {self.first}}} needs "
                f"{need} devices, but this process has {devices}{cpu}")
        return Layout(data=data, model=self.model, first=self.first)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicySection:
    """``policy``: the decoder's architecture, or a checkpoint to load instead of training."""

    name: str = _field(nonempty=True)
    d_model: int = _field(ge=1)
    n_layers: int = _field(ge=1)
    n_heads: int = _field(ge=1)
    d_ff: int = _field(ge=1)
    checkpoint: str | None = None
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)

    def check(self, path: str) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"{path}.d_model={self.d_model} must be divisible by "
                              f"{path}.n_heads={self.n_heads}")
        ckpt = self.checkpoint_path
        if ckpt is not None and not checkpoint.exists(ckpt):
            raise ConfigError(
                f"{path}.checkpoint={self.checkpoint!r} is not a ttc checkpoint (expected "
                f"{ckpt}/meta.json and {ckpt}/params/); train one with `ttc-train "
                f"+save_to=DIR` or leave {path}.checkpoint unset to train the default")

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint directory, ``None`` when unset (``null``, ``''`` or ``'null'``)."""
        return None if self.checkpoint in (None, "", "null") else Path(self.checkpoint)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HubPolicySection:
    """``policy=hf``: a pretrained checkpoint (:func:`ttc.hub.load`): a Hugging Face model
    directory or a ``.gguf`` file; nothing is trained."""

    name: str = _field(choices=("hf",))
    path: str = _field(nonempty=True)
    dtype: str = _field(default="float32", choices=("float32", "bfloat16"))
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)

    def check(self, path: str) -> None:
        p = Path(self.path).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            return
        if p.is_dir() and (p / "config.json").is_file():
            return
        what = ("does not exist" if not p.exists() else
                "is a directory without config.json" if p.is_dir() else "is not a .gguf file")
        raise ConfigError(f"{path}.path={self.path!r} {what}: give a Hugging Face model "
                          "directory (config.json + model.safetensors + tokenizer) or a .gguf "
                          "file")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSection:
    """``eval``: test problems and token selection (:class:`ttc.evaluate.EvalConfig`)."""

    n_problems: int = _field(ge=1)
    problem_seed: int = _field(ge=0)
    temperature: float = _field(ge=0)
    top_k: int = _field(ge=0)
    top_p: float = _field(gt=0, le=1)
    max_rows: int = _field(ge=1)
    majority_subsets: int = _field(ge=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSection:
    """``train`` and ``reward.train``: optimisation (:class:`ttc.train.TrainConfig`)."""

    steps: int = _field(ge=1)
    batch_size: int = _field(ge=1)
    lr: float = _field(gt=0)
    warmup: int = _field(ge=0)
    weight_decay: float = _field(ge=0)
    eval_every: int = _field(ge=1)
    eval_problems: int = _field(ge=1)
    stop_accuracy: float = _field(ge=0, le=1)
    min_steps: int = _field(ge=0)
    seed: int = _field(ge=0)

    def config(self) -> TrainConfig:
        """The library config of these values."""
        return TrainConfig(**dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelsSection:
    """``reward.labels``: Monte-Carlo step labels (:class:`ttc.train_reward.LabelConfig`)."""

    problems: int = _field(ge=1)
    samples_per_problem: int = _field(ge=1)
    rollouts: int = _field(ge=1)
    hard: bool
    seed: int = _field(ge=0)

    def config(self) -> LabelConfig:
        """The library config of these values."""
        return LabelConfig(**dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardSection:
    """``reward=learned``: the PRM/ORM head, its trunk LM, labelling and training."""

    name: str = _field(default="learned", choices=("learned",))
    head: str = _field(default="scalar", choices=REWARD_HEADS)
    init_from_policy: bool
    base: str | None = _field(default=None, nonempty=True)
    base_steps: int | None = _field(default=None, ge=1)
    labels: LabelsSection
    train: TrainSection
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)

    def check(self, path: str) -> None:
        if self.head == "lm_value" and not self.init_from_policy:
            raise ConfigError(f"{path}.head=lm_value reads a trained LM's log-probabilities: it "
                              f"needs {path}.init_from_policy=true, got false")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HubRewardSection:
    """``reward=hf``: a pretrained Hugging Face PRM/ORM (:func:`ttc.hub.load_reward`) that
    scores decoded text: it serves pool methods; PRM formats serve ``reward: prm`` methods,
    ``orm`` serves ``reward: orm`` ones."""

    name: str = _field(choices=("hf",))
    path: str = _field(nonempty=True)
    format: str = _field(choices=REWARD_FORMATS)
    dtype: str = _field(default="float32", choices=("float32", "bfloat16"))

    @property
    def kind(self) -> str:
        """The methods' ``reward`` this model serves: ``orm`` or ``prm``."""
        return "orm" if self.format == "orm" else "prm"

    def check(self, path: str) -> None:
        p = Path(self.path).expanduser()
        if not (p.is_dir() and (p / "config.json").is_file()):
            what = "does not exist" if not p.exists() else "is not a directory with config.json"
            raise ConfigError(f"{path}.path={self.path!r} {what}: give a Hugging Face reward "
                              "model directory (config.json + safetensors + tokenizer)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalLogger:
    """``logger=local``: the results store and its plots only."""

    name: str = _field(choices=("local",))


@dataclasses.dataclass(frozen=True, kw_only=True)
class WandbLogger:
    """``logger=wandb``: every record mirrored to wandb (:class:`ttc.tracking.WandbMirror`)."""

    name: str = _field(choices=("wandb",))
    project: str = _field(nonempty=True)
    mode: str = _field(choices=WANDB_MODES)
    group: str | None = _field(default=None, nonempty=True)
    """The wandb group of the job's run (``null``: the run name; a sweep's jobs share it)."""

    def check(self, path: str) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(f"{path}.name=wandb needs the wandb package, which is not "
                              "installed: `pip install wandb`, or use logger=local")


LOGGER_SECTIONS: dict[str, type] = {"local": LocalLogger, "wandb": WandbLogger}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParticlePair:
    """One row of ``reproduce.pairs``: a particle-filter label and the searches it beats."""

    particle: str = _field(nonempty=True)
    against: tuple[str, ...] = _field(nonempty=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LadderStep:
    """One row of ``reproduce.ladder``: an oracle verifier's flip rate and its method label."""

    noise: float = _field(ge=0, le=1)
    label: str = _field(nonempty=True)


CLAIMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "compute_optimal": (("baseline", "candidates"), ("n_bins", "threshold")),
    "method_by_difficulty": (("baseline", "candidates"), ("n_bins",)),
    "model_size": (("baseline", "candidates", "large_policy"), ("n_bins",)),
    "particle_filtering": (("pairs",), ("threshold",)),
    "coverage": (("coverage", "selectors"), ()),
    "verifier_free": (("majority", "others"), ()),
    "verifier_quality": (("coverage", "ladder"), ()),
}
"""Each claim of ``ttc-reproduce``: the ``reproduce`` keys it needs and those it may take."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReproduceSection:
    """``reproduce`` (set by ``+experiment=NAME``): the claim and the methods it compares."""

    claim: str = _field(choices=tuple(CLAIMS))
    baseline: str | None = _field(default=None, nonempty=True)
    candidates: tuple[str, ...] | None = _field(default=None, nonempty=True)
    n_bins: int | None = _field(default=None, ge=1)
    threshold: float | None = _field(default=None, gt=0)
    large_policy: str | None = _field(default=None, nonempty=True)
    pairs: tuple[ParticlePair, ...] | None = _field(default=None)
    coverage: str | None = _field(default=None, nonempty=True)
    selectors: tuple[str, ...] | None = _field(default=None, nonempty=True)
    majority: str | None = _field(default=None, nonempty=True)
    others: tuple[str, ...] | None = _field(default=None, nonempty=True)
    ladder: tuple[LadderStep, ...] | None = _field(default=None)

    def check(self, path: str) -> None:
        need, may = CLAIMS[self.claim]
        takes = ", ".join(f"{path}.{k}" for k in ("claim", *need, *may))
        for k in need:
            if getattr(self, k) is None:
                raise ConfigError(f"{path}.{k} is missing: claim {self.claim} needs it "
                                  f"(it takes {takes})")
        for f in dataclasses.fields(self):
            if f.name not in ("claim", *need, *may) and getattr(self, f.name) is not None:
                raise ConfigError(f"{path}.{f.name} is not used by claim {self.claim}; it "
                                  f"takes {takes}")

    def labels(self) -> list[tuple[str, str]]:
        """``(key, method label)`` of every method the claim reads."""
        out = [(k, getattr(self, k)) for k in ("baseline", "coverage", "majority")
               if getattr(self, k) is not None]
        for k in ("candidates", "selectors", "others"):
            out += [(f"reproduce.{k}[{i}]", v) for i, v in enumerate(getattr(self, k) or ())]
        for i, p in enumerate(self.pairs or ()):
            out.append((f"reproduce.pairs[{i}].particle", p.particle))
            out += [(f"reproduce.pairs[{i}].against[{j}]", v) for j, v in enumerate(p.against)]
        out += [(f"reproduce.ladder[{i}].label", s.label) for i, s in enumerate(self.ladder or ())]
        return [(k if k.startswith("reproduce.") else f"reproduce.{k}", v) for k, v in out]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedSection:
    """``distributed``: how this process joins a multi-process run
    (:class:`ttc.distributed.DistributedConfig`)."""

    initialize: str = _field(default="auto", choices=DIST_MODES)
    coordinator: str | None = _field(default=None, nonempty=True)
    num_processes: int | None = _field(default=None, ge=1)
    process_id: int | None = _field(default=None, ge=0)
    barrier_timeout_s: int = _field(default=WEEK_S, ge=1)

    def config(self) -> DistributedConfig:
        """The library config of these values."""
        return DistributedConfig(**dataclasses.asdict(self))

    def check(self, path: str) -> None:
        try:
            check_settings(self, path)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _host_devices(value: Any, key: str) -> int | str:
    if value == "auto" or (isinstance(value, str) and value.strip().isdigit()
                           and int(value) >= 1):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{key} must be 'auto' or a positive integer (CPU devices to split the "
                      f"host into), got {value!r}")


def _methods(value: Any, key: str) -> tuple[MethodSpec, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a non-empty list of method entries such as "
                          f"[{{name: majority}}] (or choose a grid with method=NAME), got "
                          f"{value!r}")
    specs = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{key}[{i}] must be a mapping such as {{name: majority}}, got "
                              f"{entry!r}")
        try:
            specs.append(make_spec(entry))
        except (TypeError, ValueError) as e:  # ConfigError is a ValueError
            raise ConfigError(f"{key}[{i}]: {e}") from None
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        where = [f"{key}[{i}]" for i, x in enumerate(labels) if x == dup[0]]
        raise ConfigError(f"method labels must be unique, {dup} repeat ({', '.join(where)} "
                          f"are all {dup[0]!r}); give each a `label`")
    return tuple(specs)


def _task(value: Any, key: str) -> Any:
    sections = {name: TASK_SECTIONS.get(name, cls) for name, cls in TASKS.items()}
    sections.update({name: TASK_SECTIONS[name] for name in TEXT_TASKS})
    return _in_group(sections, "task")(value, key)


def _policy(value: Any, key: str) -> Any:
    hub = isinstance(value, Mapping) and value.get("name") == "hf"
    return _in_group(HubPolicySection if hub else PolicySection, "policy")(value, key)
_logger = _in_group(LOGGER_SECTIONS, "logger")


def _reward(value: Any, key: str) -> Any:
    hub = isinstance(value, Mapping) and value.get("name") == "hf"
    return _in_group(HubRewardSection if hub else RewardSection, "reward")(value, key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The whole validated configuration of ``ttc-run``, ``ttc-train`` and ``ttc-reproduce``.

    Attributes:
        name: the run's name (results under ``outputs/<name>/`` by default).
        out_dir: the run directory (records, frontier, plots).
        cache_dir: where trained models are cached by config hash.
        progress: show progress bars.
        compilation_cache: JAX's persistent compilation cache under ``cache_dir/jax``.
        host_devices: ``'auto'`` or the number of CPU devices to split the host into.
        budgets: generations per problem of the pool methods.
        search_budgets: rows per problem of the step-level search methods.
        seeds: sampling seeds, one record per seed.
        eval: test problems and token selection.
        train: the policy's training.
        reward: the verifiers (PRM/ORM).
        task: the task section (its ``name`` picks the schema).
        policy: the policy's architecture or checkpoint.
        logger: where records are mirrored.
        methods: the method grid, validated by the method registry.
        reproduce: the claim of ``ttc-reproduce`` (``+experiment=NAME``), if any.
        save_to: ``ttc-train`` only: also copy the policy checkpoint here.
        distributed: how this process joins a multi-process run.
    """

    name: str = _field(nonempty=True)
    out_dir: str = _field(nonempty=True)
    cache_dir: str = _field(nonempty=True)
    progress: bool
    compilation_cache: bool = _field(default=True)
    host_devices: int | str = _field(default="auto", parse=_host_devices)
    budgets: tuple[int, ...] = _field(ge=1, nonempty=True, unique=True)
    search_budgets: tuple[int, ...] = _field(ge=1, nonempty=True, unique=True)
    seeds: tuple[int, ...] = _field(ge=0, nonempty=True, unique=True)
    eval: EvalSection
    train: TrainSection
    reward: RewardSection | HubRewardSection = dataclasses.field(metadata=_rule(parse=_reward))
    task: ArithmeticSection | GraphSection | TextTaskSection | Task = dataclasses.field(
        metadata=_rule(parse=_task))
    policy: PolicySection | HubPolicySection = dataclasses.field(metadata=_rule(parse=_policy))
    logger: LocalLogger | WandbLogger = dataclasses.field(metadata=_rule(parse=_logger))
    methods: tuple[MethodSpec, ...] = dataclasses.field(metadata=_rule(parse=_methods))
    reproduce: ReproduceSection | None = None
    save_to: str | None = _field(default=None, nonempty=True)
    distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)

    @property
    def text_task(self) -> bool:
        """Whether :attr:`task` is a text benchmark (built with a pretrained tokenizer)."""
        return isinstance(self.task, TextTaskSection)

    @property
    def hub_reward(self) -> bool:
        """``reward=hf``: a pretrained reward model, nothing trained for the verifiers."""
        return isinstance(self.reward, HubRewardSection)

    @property
    def hub_policy(self) -> bool:
        """Whether the policy is a pretrained checkpoint (``policy=hf``)."""
        return isinstance(self.policy, HubPolicySection)

    def build_task(self, tokenizer: Any = None) -> Task:
        """The task of :attr:`task` (a text task needs the policy's ``tokenizer``)."""
        try:
            if self.text_task:
                return self.task.build(tokenizer)
            return make_task(**dataclasses.asdict(self.task))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"task: {e}") from None

    def eval_config(self) -> EvalConfig:
        """The evaluation config: budgets, seeds and the ``eval`` section."""
        return EvalConfig(budgets=self.budgets, search_budgets=self.search_budgets,
                          seeds=self.seeds, **dataclasses.asdict(self.eval))


# ---- checks between sections ----------------------------------------------------------------

def validate(cfg: DictConfig | Mapping[str, Any], *, command: str = "run") -> RunConfig:
    """Checks the whole configuration of entry point ``command`` before anything runs.

    Args:
        cfg: the composed configuration (interpolations are resolved here).
        command: ``run``, ``train`` or ``reproduce``: ``save_to`` is for ``train`` only, and
            ``reproduce`` needs a ``reproduce`` section (``+experiment=NAME``).

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: the first mistake found, naming its key, its value and what is allowed.
    """
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
    data = _plain(cfg)
    data.pop("hydra", None)  # Hydra's own section, when composed with it
    rc = parse_section(RunConfig, data, "")
    _check_pretrained(rc, command)
    task = None if rc.text_task else rc.build_task()
    if task is not None and not rc.hub_policy:
        _check_checkpoint(rc, task)
    for i, spec in enumerate(rc.methods):
        try:
            check_budgets(spec, list(rc.search_budgets))
        except ConfigError as e:
            raise ConfigError(f"methods[{i}]: {e}") from None
    _check_command(rc, command)
    if not rc.hub_reward and rc.reward.base is not None:
        policy_file(rc.reward.base, "reward.base")
    _check_hub_reward(rc)
    if task is not None:
        _check_problem_space(rc, task)
    for key in ("out_dir", "cache_dir", "save_to"):
        if getattr(rc, key) is not None:
            check_writable(key, getattr(rc, key))
    return rc


def _check_pretrained(rc: RunConfig, command: str) -> None:
    """Text tasks need a pretrained tokenizer; a pretrained policy is not trained and runs the
    methods that need no learned verifier of ttc's own."""
    if rc.text_task and not rc.hub_policy:
        raise ConfigError(f"task={rc.task.name} is text: it needs a pretrained policy with a "
                          "tokenizer (policy=hf policy.path=DIR_OR_GGUF)")
    if not rc.hub_policy:
        return
    if not rc.text_task:
        raise ConfigError(f"policy=hf is a pretrained model with its own tokenizer; "
                          f"task={rc.task.name} is synthetic (char tokenizer): choose a text "
                          "task (task=gsm8k|math|jsonl task.path=FILE)")
    n = _count_records(rc.task.path)
    if rc.eval.n_problems > n:
        raise ConfigError(f"eval.n_problems={rc.eval.n_problems} is more than the {n} "
                          f"records of task.path={rc.task.path!r}")
    if command == "train":
        raise ConfigError("policy=hf is a pretrained checkpoint: ttc-train has nothing to "
                          "train (use ttc-run)")
    for i, m in enumerate(rc.methods):
        if m.name == "pgibbs" and m.reward == "oracle":
            raise ConfigError(f"methods[{i}] ({m.label}): particle Gibbs runs its sweeps inside "
                              f"one jitted loop, and task={rc.task.name}'s oracle reads answers "
                              "on the host between steps: use particle or tempering with the "
                              "oracle, or particle Gibbs with reward=learned")
    learned = [f"methods[{i}]" for i, m in enumerate(rc.methods) if m.reward in ("prm", "orm")]
    if rc.hub_reward:
        return
    if learned and rc.task.train_path is None:
        raise ConfigError(f"{learned[0]} needs a learned reward model, trained on Monte-Carlo "
                          "step labels of train problems: set task.train_path=FILE (e.g. "
                          "GSM8K's train.jsonl), or use method=verifier_free or reward:oracle "
                          "methods")
    if learned and rc.reward.base is not None:
        raise ConfigError(f"reward.base={rc.reward.base!r}: with policy=hf the verifier starts "
                          "from the pretrained policy itself; set reward.base=null")
    if learned:
        need = rc.reward.labels.problems + val_problems(rc.reward.labels)
        have = _count_records(rc.task.train_path) - rc.task.k_shot
        if have < need:
            raise ConfigError(f"reward.labels.problems={rc.reward.labels.problems}: the learned "
                              f"verifier labels {need} train problems ({rc.reward.labels.problems}"
                              f" for training, {need - rc.reward.labels.problems} for validation)"
                              f" but task.train_path={rc.task.train_path!r} has {have}"
                              + (f" after its {rc.task.k_shot} k-shot examples"
                                 if rc.task.k_shot else "") + "; lower reward.labels.problems")


def _check_hub_reward(rc: RunConfig) -> None:
    """``reward=hf`` scores text: a pretrained policy on a text task, methods of the kind its
    format serves."""
    if not rc.hub_reward:
        return
    if not rc.hub_policy:
        raise ConfigError("reward=hf scores decoded text: it needs a pretrained policy and a text "
                          "task (policy=hf policy.path=... task=gsm8k|math|jsonl task.path=...)")
    kind = rc.reward.kind
    for i, m in enumerate(rc.methods):
        if m.reward not in ("prm", "orm"):
            continue
        if m.name == "pgibbs":
            raise ConfigError(f"methods[{i}] ({m.label}): particle Gibbs does not run over a "
                              "Hugging Face reward model yet (reward=hf); use particle, or "
                              "reward=learned / reward: oracle")
        if m.reward != kind:
            raise ConfigError(f"methods[{i}] ({m.label}) asks for reward: {m.reward}, but "
                              f"reward.format={rc.reward.format} is a{'n' if kind == 'orm' else ''}"
                              f" {kind}; give that method reward: {kind}")


def _count_records(path: str) -> int:
    """Non-empty lines of a JSONL file."""
    with open(Path(path).expanduser(), "rb") as f:
        return sum(1 for line in f if line.strip())


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as plain containers, interpolations resolved."""
    if not OmegaConf.is_config(cfg):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "the configuration"
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{key}: {msg}") from None


def _check_checkpoint(rc: RunConfig, task: Task) -> None:
    """A given policy checkpoint must have the task's vocabulary and enough positions."""
    path = rc.policy.checkpoint_path
    if path is None:
        return
    raw = rc.policy.checkpoint
    try:
        model = json.loads((path / "meta.json").read_text())["model"]
        max_len, vocab = model.get("max_len"), model.get("vocab_size")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"policy.checkpoint={raw!r}: cannot read the model config in "
                          f"{path / 'meta.json'} ({type(e).__name__}: {e})") from None
    width = task.max_prompt_len + task.max_solution_len
    if isinstance(max_len, int) and max_len < width:
        raise ConfigError(f"policy.checkpoint={raw!r} has {max_len} positions (max_len), but "
                          f"the task needs prompt + solution = {task.max_prompt_len} + "
                          f"{task.max_solution_len} = {width} ({_task_text(rc)}); use a smaller "
                          "task (e.g. task.max_ops, task.max_hops, task.num_nodes) or a "
                          "checkpoint trained on this one")
    if isinstance(vocab, int) and vocab != task.tokenizer.vocab_size:
        raise ConfigError(f"policy.checkpoint={raw!r} has a vocabulary of {vocab} tokens, but "
                          f"the task's tokenizer has {task.tokenizer.vocab_size} "
                          f"({_task_text(rc)}); use a checkpoint trained on this task")


def _task_text(rc: RunConfig) -> str:
    return "task: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(rc.task).items())


def _check_command(rc: RunConfig, command: str) -> None:
    if command == "reproduce" and rc.reproduce is None:
        experiments = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
        raise ConfigError("reproduce is missing: choose an experiment: ttc-reproduce "
                          f"+experiment=NAME, NAME one of {experiments}")
    if command != "train" and rc.save_to is not None:
        raise ConfigError(f"save_to={rc.save_to!r} is read by ttc-train only; ttc-{command} "
                          "would ignore it: drop it")
    if rc.reproduce is None:
        return
    labels = [m.label for m in rc.methods]
    for key, label in rc.reproduce.labels():
        if label not in labels:
            raise ConfigError(f"{key}={label!r} names no method of the grid; the methods' "
                              f"labels are {labels} (claim {rc.reproduce.claim})")
    if rc.reproduce.large_policy is not None:
        policy_file(rc.reproduce.large_policy, "reproduce.large_policy")


def policy_file(name: str, key: str) -> Path:
    """The policy config ``conf/policy/<name>.yaml`` that ``key`` names, checked against
    :class:`PolicySection`.

    Raises:
        ConfigError: there is no such file, or it is not a valid policy config.
    """
    path = Path(CONF_DIR) / "policy" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{key}={name!r}: no policy config {name!r} in {path.parent}; "
                          f"choose one of {choices}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        parse_section(PolicySection, data, "policy")
    except (ConfigError, OmegaConfBaseException) as e:
        raise ConfigError(f"{key}={name!r}: {path} is not a valid policy config: {e}") from None
    return path


def _check_problem_space(rc: RunConfig, task: Task) -> None:
    """The test and training splits must hold the distinct problems a job draws from them.

    Splits far larger than the draw pass at once; a split estimated at under half the draw
    fails at once; in between, the problems are drawn once to decide."""
    if not hasattr(rc.task, "space"):
        return
    space = rc.task.space()
    wanted = {"test": [("eval.n_problems", rc.eval.n_problems)],
              "train": [("train.batch_size", rc.train.batch_size),
                        ("train.eval_problems", rc.train.eval_problems),
                        ("reward.labels.problems", rc.reward.labels.problems)]}
    for split, asks in wanted.items():
        key, n = max(asks, key=lambda kv: kv[1])
        share = rc.task.test_fraction if split == "test" else 1 - rc.task.test_fraction
        estimate = space * share
        if estimate >= _DRAW_MARGIN * n:
            continue
        msg = (f"{key}={n} asks for more distinct {split} problems than the task holds (about "
               f"{estimate:.0f}: task.test_fraction={rc.task.test_fraction} of {space}; "
               f"{_task_text(rc)}); lower {key} or widen the task")
        if estimate < n / 2:
            raise ConfigError(msg)
        try:
            task.problems(n, seed=0, split=split)
        except ValueError:
            raise ConfigError(msg) from None


def check_writable(key: str, raw: str) -> None:
    """Checks that directory ``raw`` (of config key ``key``) exists or can be created, and
    that files can be written in it, without creating it: a temporary file is created and
    removed in its nearest existing ancestor.

    Raises:
        ConfigError: naming the key, the path and the operating system's error.
    """
    path = Path(raw).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}={raw!r} cannot be a directory: {probe} is a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ttc-write-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{key}={raw!r} is not writable: cannot create a file in {probe} "
                          f"({e.strerror or e})") from None
