"""Model-family registry: from a config to its module, and configs to and from checkpoint
metadata.

A family is registered once under a name with its config class and its module class
(``Module(cfg, *, rngs)``, see :mod:`ttc.models.interface`). :func:`create` dispatches on the
config's type; :func:`config_to_dict` writes ``{"family": name, **fields}`` and
:func:`config_from_dict` reads it back (a dict without ``"family"`` is a
:data:`DEFAULT_FAMILY` config).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from ttc.models.interface import Policy, PolicyConfig

DEFAULT_FAMILY = "transformer"
"""The family of checkpoint metadata that names none."""

_BY_NAME: dict[str, tuple[type, type]] = {}
_BY_CONFIG: dict[type, str] = {}


def register(name: str, config_cls: type, module_cls: type) -> None:
    """Registers family ``name``: configs of ``config_cls`` build ``module_cls`` modules.

    Registering the same triple again is a no-op; reusing a name or a config class for another
    family raises ``ValueError``.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls.__name__} must be a (frozen) dataclass")
    known = _BY_NAME.get(name)
    if known == (config_cls, module_cls):
        return
    if known is not None or config_cls in _BY_CONFIG:
        raise ValueError(f"model family {name!r} or config {config_cls.__name__} already "
                         f"registered (families: {sorted(_BY_NAME)})")
    _BY_NAME[name] = (config_cls, module_cls)
    _BY_CONFIG[config_cls] = name


def families() -> tuple[str, ...]:
    """The registered family names."""
    return tuple(_BY_NAME)


def family_of(cfg: PolicyConfig) -> str:
    """The registered name of ``cfg``'s family (its class or the nearest registered base)."""
    for cls in type(cfg).__mro__:
        if cls in _BY_CONFIG:
            return _BY_CONFIG[cls]
    raise TypeError(f"no model family registered for {type(cfg).__name__} "
                    f"(families: {sorted(_BY_NAME)}); see ttc.models.register")


def create(cfg: PolicyConfig, seed: int = 0) -> Policy:
    """A freshly initialised module of ``cfg``'s family (parameters drawn from ``seed``)."""
    _, module_cls = _BY_NAME[family_of(cfg)]
    return module_cls(cfg, rngs=nnx.Rngs(seed))


def partition_rules(cfg: PolicyConfig, model: int) -> tuple[tuple[str, tuple], ...]:
    """The family's partition rules for a ``model`` mesh axis of size ``model`` (its module's
    ``partition_rules(cfg, model)``; none: every parameter replicated), for
    :func:`ttc.parallel.place`."""
    _, module_cls = _BY_NAME[family_of(cfg)]
    rules = getattr(module_cls, "partition_rules", None)
    return tuple(rules(cfg, model)) if rules is not None else ()


def param_specs(cfg: PolicyConfig, params: Any, model: int) -> Any:
    """A tree like ``params`` of each parameter's ``PartitionSpec`` on a ``model``-way split
    (:func:`partition_rules`; everything replicated when ``model`` is 1)."""
    from ttc.parallel import partition_specs

    return partition_specs(params, partition_rules(cfg, model) if model > 1 else ())


def check_model_split(cfg: PolicyConfig, model: int) -> None:
    """Checks that a ``model`` mesh axis of size ``model`` divides ``cfg``'s attention heads and
    MLP hidden units (what the partition rules split).

    Raises:
        ValueError: it does not; the message names the sizes.
    """
    for name in ("n_heads", "d_ff"):
        size = getattr(cfg, name, None)
        if size is not None and size % model:
            raise ValueError(f"mesh model={model} does not divide the model's {name}={size}; "
                             f"choose a model axis size that divides {name}")


def config_to_dict(cfg: PolicyConfig) -> dict[str, Any]:
    """``cfg`` as JSON-able checkpoint metadata: ``{"family": name, **fields}``."""
    return {"family": family_of(cfg), **dataclasses.asdict(cfg)}


def config_from_dict(d: dict[str, Any]) -> PolicyConfig:
    """The config that :func:`config_to_dict` wrote (``"family"`` defaults to
    :data:`DEFAULT_FAMILY`)."""
    fields = dict(d)
    name = fields.pop("family", DEFAULT_FAMILY)
    if name not in _BY_NAME:
        raise ValueError(f"unknown model family {name!r} (families: {sorted(_BY_NAME)})")
    config_cls, _ = _BY_NAME[name]
    return config_cls(**fields)
