"""Damaged, partly written and concurrently replaced checkpoints and resume snapshots."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import traceback
import warnings

import jax
import numpy as np
import pytest

from ttc import checkpoint as C
from ttc import train as T
from ttc import train_reward as TR
from ttc.errors import ConfigError
from ttc.models.transformer import TransformerConfig, create

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model (copy it before damaging it) and the model itself."""
    model = C.LoadedModel.from_module(create(CFG), {"note": "tiny"})
    return C.save(tmp_path_factory.mktemp("ckpt") / "model", model), model


@pytest.fixture
def ckpt(saved, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(saved[0], dst)
    return dst


def _largest_file(d):
    files = [p for p in (d / "params").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _damage_error(path) -> str:
    """The printed form of the error ``load(path)`` raises, checked to be one clean paragraph."""
    with pytest.raises(ConfigError) as info:
        C.load(path)
    err = info.value
    printed = "".join(traceback.format_exception(err))
    assert str(path) in str(err) and "damaged or incomplete" in str(err)
    assert "another checkpoint" in str(err) and "\n" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert "During handling" not in printed and "TensorStore" not in printed
    return str(err)


def test_round_trip_leaves_no_temporaries(saved):
    path, model = saved
    assert C.exists(path)
    got = C.load(path)
    assert got.cfg == CFG and got.meta == {"note": "tiny"}
    for x, y in zip(jax.tree.leaves(model.params), jax.tree.leaves(got.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), y)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]
    assert sorted(p.name for p in path.iterdir()) == ["files.json", "meta.json", "params"]


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_array_file(ckpt, keep):
    f = _largest_file(ckpt)
    os.truncate(f, int(f.stat().st_size * keep))
    msg = _damage_error(ckpt)
    assert f"parameter file {f.relative_to(ckpt)} is truncated" in msg


def test_altered_array_file(ckpt):
    f = _largest_file(ckpt)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert "checksum differs" in _damage_error(ckpt)


def test_truncated_file_of_a_checkpoint_without_file_list(ckpt, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    (ckpt / "files.json").unlink()  # as written by earlier versions: orbax finds the damage
    f = _largest_file(ckpt)
    os.truncate(f, f.stat().st_size // 2)
    assert "parameter arrays" in _damage_error(ckpt)
    gc.collect()
    assert unraisable == []


def test_missing_metadata_files(ckpt, tmp_path):
    (ckpt / "params" / "_METADATA").unlink()  # orbax's tree metadata
    assert "parameter file params/_METADATA is missing" in _damage_error(ckpt)
    (ckpt / "files.json").write_text("[")
    assert "files.json cannot be read" in _damage_error(ckpt)
    (ckpt / "meta.json").unlink()
    assert "meta.json is missing" in _damage_error(ckpt)
    with pytest.raises(ConfigError, match="no ttc checkpoint"):
        C.load(tmp_path / "nothing-here")


def test_garbage_or_inconsistent_meta(ckpt):
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text('{"model": {"vocab')
    assert "meta.json cannot be read" in _damage_error(ckpt)
    (ckpt / "meta.json").write_text("[1, 2]")
    assert "no 'model'" in _damage_error(ckpt)
    (ckpt / "meta.json").write_text(json.dumps({**meta, "model": {**meta["model"], "depth": 3}}))
    assert "does not describe a model" in _damage_error(ckpt)
    (ckpt / "meta.json").write_text(json.dumps({**meta, "model": {**meta["model"], "d_ff": 128}}))
    assert "do not match" in _damage_error(ckpt)


def test_load_cached_moves_a_damaged_entry_aside(ckpt, tmp_path):
    assert C.load_cached(tmp_path / "absent") is None
    assert C.load_cached(ckpt).cfg == CFG
    f = _largest_file(ckpt)
    size = f.stat().st_size
    os.truncate(f, size // 2)
    with pytest.warns(C.CheckpointDamageWarning, match="moved it to .*model.damaged-1"):
        assert C.load_cached(ckpt) is None
    aside = tmp_path / "model.damaged-1"
    assert not ckpt.exists() and (aside / "meta.json").is_file()
    assert (aside / f.relative_to(ckpt)).stat().st_size == size // 2  # kept as it was
    ckpt.mkdir()  # an empty directory where the entry should be: set aside too
    with pytest.warns(C.CheckpointDamageWarning, match="model.damaged-2"):
        assert C.load_cached(ckpt) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.damaged-1", "model.damaged-2"]


def test_get_policy_retrains_a_damaged_cache_entry(saved, task, tiny_cfg, tmp_path, monkeypatch):
    calls = []

    def fake_train(task, model_cfg, cfg, *, out_dir, **kw):
        calls.append(out_dir)
        return C.load(C.save(out_dir, C.LoadedModel.from_module(create(model_cfg))))

    monkeypatch.setattr(T, "train_policy", fake_train)
    tc = T.TrainConfig(steps=1)
    T.get_policy(task, tiny_cfg, tc, cache_dir=tmp_path, progress=False)
    T.get_policy(task, tiny_cfg, tc, cache_dir=tmp_path, progress=False)  # cached
    assert len(calls) == 1
    (calls[0] / "meta.json").write_text("{")
    with pytest.warns(C.CheckpointDamageWarning):
        model = T.get_policy(task, tiny_cfg, tc, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2 and model.meta["id"] == calls[0].name
    assert calls[0].with_name(calls[0].name + ".damaged-1").is_dir()


def test_get_reward_model_retrains_a_damaged_cache_entry(task, tiny_cfg, tmp_path, monkeypatch):
    calls = []
    rcfg = TransformerConfig(**{**tiny_cfg.__dict__, "head": "scalar"})

    def fake_train(kind, data, val, task, model_cfg, cfg, *, out_dir, **kw):
        calls.append(out_dir)
        return C.load(C.save(out_dir, C.LoadedModel.from_module(create(model_cfg))))

    monkeypatch.setattr(TR, "_labels", lambda *a, **k: (None, None))
    monkeypatch.setattr(TR, "train_reward_model", fake_train)
    policy = C.LoadedModel.from_module(create(tiny_cfg), {"id": "policy-x"})
    args = ("prm", policy, task, rcfg, TR.LabelConfig(), T.TrainConfig(steps=1))
    TR.get_reward_model(*args, cache_dir=tmp_path, progress=False)
    os.truncate(_largest_file(calls[0]), 10)
    with pytest.warns(C.CheckpointDamageWarning):
        TR.get_reward_model(*args, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2 and calls[0].with_name(calls[0].name + ".damaged-1").is_dir()


def test_interrupted_save_keeps_the_previous_checkpoint(ckpt, monkeypatch):
    def crash(path, params):
        path.mkdir()
        (path / "partial").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "_write_params", crash)
    with pytest.raises(KeyboardInterrupt):
        C.save(ckpt, C.LoadedModel.from_module(create(CFG)))
    assert C.load(ckpt).meta == {"note": "tiny"}
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["model"]


def test_save_sweeps_leftovers_of_dead_saves(ckpt, monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale = ckpt.with_name(f"model.tmp-{C._HOST}-{pid}-00000000")
    live = ckpt.with_name(f"model.tmp-{C._HOST}-{os.getpid()}-00000000")  # a save in progress
    stale.mkdir()
    live.mkdir()
    monkeypatch.setattr(C, "_write_params", lambda path, params: shutil.copytree(
        ckpt / "params", path))
    C.save(ckpt, C.LoadedModel.from_module(create(CFG), {"note": "again"}))
    assert not stale.exists() and live.exists()
    assert C.load(ckpt).meta == {"note": "again"}


def test_damaged_resume_snapshot_is_moved_aside(tmp_path):
    out = tmp_path / "run"
    point = C.ResumePoint.at(out, {"a": 1})
    rng = np.random.default_rng(0)
    like = {"w": {"x": np.zeros(3), "y": np.ones((2, 2))}}
    point.save(like, rng, step=4, history=[])
    assert point.load(like, np.random.default_rng(1))[1]["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.resume.npz"]
    os.truncate(point.path, point.path.stat().st_size - 20)
    with pytest.warns(C.CheckpointDamageWarning, match="training starts from the beginning"):
        assert point.load(like, rng) is None
    assert not point.path.exists() and (tmp_path / "run.resume.npz.damaged-1").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert point.load(like, rng) is None  # no snapshot: nothing to warn about


_SAVE_ON_TWO = """
import sys
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ttc import checkpoint as C
from ttc.models.transformer import TransformerConfig, create
cfg = TransformerConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=32)
model = C.LoadedModel.from_module(create(cfg), {"note": "two devices"})
assert len(jax.devices()) == 2
both = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), PartitionSpec())
model = C.LoadedModel(cfg=model.cfg, graphdef=model.graphdef,
                      params=jax.device_put(model.params, both), meta=model.meta)
C.save(sys.argv[1], model)
np.save(sys.argv[2], np.concatenate([np.ravel(x) for x in jax.tree.leaves(model.params)]))
"""


def test_checkpoint_written_on_two_devices_loads_on_one(tmp_path):
    """A checkpoint saved by a two-device process (the main job's default on a 2-core host)
    loads in a one-device process with the same values; orbax alone reports a topology mismatch,
    which must not be mistaken for damage."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", _SAVE_ON_TWO, str(tmp_path / "m"),
                    str(tmp_path / "flat.npy")], check=True, env=env, timeout=300)
    load = ("import sys, jax, numpy as np; from ttc import checkpoint as C; "
            "assert len(jax.devices()) == 1; m = C.load(sys.argv[1]); "
            "np.save(sys.argv[2], np.concatenate([np.ravel(x) for x in "
            "jax.tree.leaves(m.params)]))")
    env1 = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", load, str(tmp_path / "m"), str(tmp_path / "got.npy")],
                   check=True, env=env1, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.load(tmp_path / "flat.npy"))
