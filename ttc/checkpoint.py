"""Orbax checkpoints that carry their own config, so a model reloads without guessing shapes.

Layout of a checkpoint directory::

    <dir>/meta.json      {"model": TransformerConfig fields, "task": {...}, "info": {...}}
    <dir>/params/        orbax StandardCheckpointer tree of the model's parameters

Writes go to ``<dir>.tmp`` and are renamed into place at the end, so an interrupted save never
leaves a directory that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ttc.models.transformer import TransformerConfig, create


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model split for jit: static ``graphdef`` + parameter ``params`` + its config."""

    cfg: TransformerConfig
    graphdef: nnx.GraphDef
    params: nnx.State
    meta: dict

    @classmethod
    def from_module(cls, module: nnx.Module, meta: dict | None = None) -> LoadedModel:
        graphdef, params = nnx.split(module, nnx.Param)
        return cls(cfg=module.cfg, graphdef=graphdef, params=params, meta=dict(meta or {}))

    def on_host(self) -> LoadedModel:
        """This model with its parameters as host numpy arrays (as :func:`load` returns them),
        so that it no longer belongs to the device it was trained on."""
        params = jax.tree.map(np.asarray, self.params)
        return dataclasses.replace(self, params=params)


def _write_params(path: Path, params: nnx.State) -> None:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path.absolute(), nnx.to_pure_dict(params))
    ckptr.wait_until_finished()


def save(directory: str | os.PathLike, model: LoadedModel) -> Path:
    """Saves ``model`` (parameters + config + meta) atomically to ``directory``."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_params(tmp / "params", model.params)
    meta = {"model": dataclasses.asdict(model.cfg), **model.meta}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def exists(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / "meta.json").is_file() and (d / "params").is_dir()


def load(directory: str | os.PathLike) -> LoadedModel:
    """Loads a checkpoint written by :func:`save`; raises ``FileNotFoundError`` if incomplete."""
    d = Path(directory)
    if not exists(d):
        raise FileNotFoundError(f"no checkpoint at {d} (expected {d}/meta.json and {d}/params/)")
    meta = json.loads((d / "meta.json").read_text())
    cfg = TransformerConfig(**meta.pop("model"))
    module = create(cfg)
    graphdef, params = nnx.split(module, nnx.Param)
    restored = ocp.StandardCheckpointer().restore((d / "params").absolute())
    restored = nnx.restore_int_paths(restored)
    nnx.replace_by_pure_dict(params, jax.tree.map(np.asarray, restored))
    return LoadedModel(cfg=cfg, graphdef=graphdef, params=params, meta=meta)


def save_snapshot(path: str | os.PathLike, trees: dict[str, Any], meta: dict) -> None:
    """Atomically writes pytrees (as their flattened leaves) and a JSON ``meta`` to ``path``
    (one ``.npz`` file): the periodic resume point of a training loop."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}/{i}": np.asarray(x)
              for name, tree in trees.items() for i, x in enumerate(jax.tree.leaves(tree))}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_snapshot(path: str | os.PathLike, like: dict[str, Any]) -> tuple[dict, dict] | None:
    """Reads a :func:`save_snapshot` file into the structures of ``like`` (same names, same
    tree structure); ``None`` if there is no snapshot or it does not match."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        out = {}
        for name, tree in like.items():
            leaves, treedef = jax.tree.flatten(tree)
            try:
                new = [z[f"{name}/{i}"] for i in range(len(leaves))]
            except KeyError:
                return None
            if any(np.shape(a) != np.shape(b) for a, b in zip(new, leaves, strict=True)):
                return None
            out[name] = jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in new])
    return out, meta


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The resume point of a training loop that saves to ``out_dir``: a :func:`save_snapshot`
    file ``<out_dir>.resume.npz`` (pytrees, data-order RNG state, step, history and any extra
    metadata), used only by a run whose ``cfg`` (a JSON-able dict) is the one that wrote it.

    A disabled point (``out_dir=None``) loads nothing and saves nothing."""

    path: Path | None
    cfg: dict

    @classmethod
    def at(cls, out_dir: str | os.PathLike | None, cfg: dict) -> ResumePoint:
        return cls(None if out_dir is None else Path(str(out_dir) + ".resume.npz"), cfg)

    def load(self, like: dict[str, Any], rng: np.random.Generator) -> tuple[dict, dict] | None:
        """The saved trees and metadata (and ``rng`` set to its saved state), or ``None`` if
        there is no snapshot for this configuration."""
        got = None if self.path is None else load_snapshot(self.path, like)
        if got is None or got[1].get("cfg") != self.cfg:
            return None
        rng.bit_generator.state = got[1]["rng"]
        return got

    def save(self, trees: dict[str, Any], rng: np.random.Generator, *, step: int,
             history: list, **extra: Any) -> None:
        if self.path is not None:
            save_snapshot(self.path, trees, {"step": step, "rng": rng.bit_generator.state,
                                             "history": history, "cfg": self.cfg, **extra})

    def clear(self) -> None:
        """Removes the snapshot (call once the final checkpoint is saved)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serializable: {type(o)}")
