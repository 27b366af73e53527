"""Every configuration mistake stops the entry points at once (exit status 2, one paragraph that
names the key, no traceback, nothing written), and every shipped configuration validates."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_run import TINY

from ttc.cli import train as train_cli
from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.reproduce import reproduce
from ttc.cli.run import run
from ttc.cli.schema import TASK_SECTIONS, RunConfig, validate
from ttc.evaluate import EvalConfig
from ttc.tasks import TASKS, TextTask
from ttc.train import TrainConfig

ENTRIES = {"run": run, "train": train_cli.run, "reproduce": reproduce}

# (entry point, overrides of the default config, the key the message must name). `{tmp}` is the
# test's directory, `{file}` a regular file in it, `{short}` a checkpoint with too few
# positions for the task.
CASES = [
    # task
    ("run", "task.min_ops=0", "task.min_ops"),
    ("run", "task.min_ops=3 task.max_ops=2", "task.max_ops"),
    ("run", "task.max_ops=abc", "task.max_ops"),
    ("run", "task.modulus=5000", "task.modulus"),
    ("run", "task.test_fraction=1.0", "task.test_fraction"),
    ("run", "+task.foo=3", "task.foo"),
    ("run", "task=graph task.num_nodes=30", "task.num_nodes"),
    ("run", "task=graph task.shuffle_edges=1", "task.shuffle_edges"),
    ("run", "task=graph task.num_nodes=2 task.min_hops=1 task.max_hops=1", "eval.n_problems"),
    ("run", "task=subset_sum task.max_numbers=11", "task.max_numbers"),
    ("run", "task=subset_sum task.min_numbers=5 task.max_numbers=3", "task.max_numbers"),
    ("run", "task=subset_sum task.max_value=0", "task.max_value"),
    ("run", "task=subset_sum task.min_numbers=2 task.max_numbers=2 task.max_value=4",
     "eval.n_problems"),
    ("run", "task=sudoku task.max_blanks=13", "task.max_blanks"),
    ("run", "task=sudoku task.min_blanks=8 task.max_blanks=5", "task.max_blanks"),
    ("run", "task=sudoku task.min_blanks=1 task.max_blanks=1 eval.n_problems=2000",
     "eval.n_problems"),
    # policy
    ("run", "policy.n_heads=0", "policy.n_heads"),
    ("run", "policy.d_model=30", "policy.d_model"),
    ("run", "policy.n_layers=two", "policy.n_layers"),
    ("run", "+policy.max_len=16", "policy.max_len"),
    ("run", "policy.checkpoint={tmp}/missing", "policy.checkpoint"),
    ("run", "policy.checkpoint={short}", "policy.checkpoint"),
    # methods (the method registry)
    ("run", "methods=[{name:nope}]", "methods[0]"),
    ("run", "methods=[{name:beam,beam_width:0}]", "beam_width"),
    ("run", "methods=[{name:particle,ess_threshold:1.5}]", "ess_threshold"),
    ("run", "methods=[{name:single},{name:beam,beam_width:4}] search_budgets=[6]", "methods[1]"),
    ("run", "methods=[{name:single},{name:single}]", "methods[1]"),
    ("run", "methods=[{name:majority,reward:prm}]", "methods[0]"),
    ("run", "methods=majority", "methods"),
    ("run", "methods=[]", "methods"),
    # logger
    ("run", "logger=wandb logger.mode=cloud", "logger.mode"),
    ("run", "logger=wandb logger.project=", "logger.project"),
    ("run", "+logger.mode=offline", "logger.mode"),
    # experiment / reproduce
    ("reproduce", "", "reproduce"),
    ("reproduce", "+experiment=compute_optimal reproduce.baseline=nope", "reproduce.baseline"),
    ("reproduce", "+experiment=compute_optimal reproduce.claim=nope", "reproduce.claim"),
    ("reproduce", "+experiment=model_size reproduce.large_policy=huge", "reproduce.large_policy"),
    ("reproduce", "+experiment=verifier_quality reproduce.ladder.0.noise=2",
     "reproduce.ladder[0].noise"),
    ("reproduce", "+experiment=verifier_free +reproduce.threshold=2", "reproduce.threshold"),
    ("reproduce", "+experiment=verifier_free ~reproduce.others", "reproduce.others"),
    # eval
    ("run", "eval.top_p=2.0", "eval.top_p"),
    ("run", "eval.top_p=0", "eval.top_p"),
    ("run", "eval.top_k=-3", "eval.top_k"),
    ("run", "eval.temperature=-1", "eval.temperature"),
    ("run", "eval.temperature=nan", "eval.temperature"),
    ("run", "+eval.n_problem=3", "eval.n_problem"),
    ("run", "task.min_ops=1 task.max_ops=2 eval.n_problems=5000", "eval.n_problems"),
    ("run", "eval.max_rows=0", "eval.max_rows"),
    ("run", "~eval.top_p", "eval.top_p"),
    # train
    ("run", "train.steps=abc", "train.steps"),
    ("run", "train.steps=true", "train.steps"),
    ("run", "train.lr=0", "train.lr"),
    ("run", "train.stop_accuracy=1.5", "train.stop_accuracy"),
    ("run", "+train.foo=1", "train.foo"),
    ("train", "train.batch_size=0", "train.batch_size"),
    # reward
    ("run", "reward.head=bogus", "reward.head"),
    ("run", "reward.init_from_policy=false", "reward.init_from_policy"),
    ("run", "reward.base=nope", "reward.base"),
    ("run", "reward.base_steps=0", "reward.base_steps"),
    ("train", "+reward.extra=1", "reward.extra"),
    # reward.labels
    ("run", "reward.labels.rollouts=0", "reward.labels.rollouts"),
    ("run", "reward.labels.hard=1", "reward.labels.hard"),
    ("run", "+reward.labels.rollout=3", "reward.labels.rollout"),
    # reward.train
    ("run", "reward.train.batch_size=0", "reward.train.batch_size"),
    ("train", "reward.train.lr=-1", "reward.train.lr"),
    # top-level keys
    ("run", "seeds=[-1]", "seeds"),
    ("run", "seeds=0", "seeds"),
    ("run", "budgets=[1,-4]", "budgets"),
    ("run", "budgets=[4,4]", "budgets"),
    ("run", "search_budgets=[0]", "search_budgets"),
    ("run", "out_dir={file}/out", "out_dir"),
    ("run", "cache_dir=/proc/nope/ckpt", "cache_dir"),
    ("train", "cache_dir={file}/ckpt", "cache_dir"),
    ("run", "out_dir=${nope}", "out_dir"),
    ("run", "host_devices=0", "host_devices"),
    ("run", "host_devices=abc", "host_devices"),
    ("run", "name=", "name"),
    ("run", "progress=yes", "progress"),
    ("run", "+foo=1", "foo"),
    ("run", "+save_to={tmp}/copy", "save_to"),
    ("train", "+save_to={file}/copy", "save_to"),
    # device meshes (2 JAX devices in the tests) and multi-process settings
    ("run", "policy.mesh.model=0", "policy.mesh.model"),
    ("run", "policy.mesh.data=4 policy.mesh.model=2", "policy.mesh"),
    ("run", "policy.n_heads=1 policy.mesh.model=2", "policy.mesh.model"),
    ("run", "+policy.mesh.pipeline=2", "policy.mesh.pipeline"),
    ("run", "reward.mesh.first=-1", "reward.mesh.first"),
    ("run", "reward.mesh.first=2", "reward.mesh"),
    ("run", "distributed.initialize=maybe", "distributed.initialize"),
    ("run", "distributed.coordinator=localhost:1234", "distributed.num_processes"),
    ("run", "distributed.process_id=1", "distributed.coordinator"),
    ("run", "distributed.coordinator=nohost distributed.num_processes=2 "
     "distributed.process_id=0", "distributed.coordinator"),
    ("run", "distributed.coordinator=h:1 distributed.num_processes=2 distributed.process_id=2",
     "distributed.process_id"),
    ("run", "distributed.initialize=off distributed.coordinator=h:1 "
     "distributed.num_processes=2 distributed.process_id=0", "distributed.initialize"),
    # methods a pretrained policy cannot run on a text task
    ("run", "policy=hf policy.path={model} task=gsm8k task.path={data} eval.n_problems=1 "
     "methods=[{name:pgibbs,reward:oracle}]", "methods[0]"),
    ("run", "policy=hf policy.path={model} task=gsm8k task.path={data} eval.n_problems=1 "
     "reward=hf reward.path={model} reward.format=qwen_prm "
     "methods=[{name:pgibbs,reward:prm}]", "methods[0]"),
]


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    short = tmp_path / "short"
    (short / "params").mkdir(parents=True)
    (short / "meta.json").write_text(json.dumps({"model": {"vocab_size": 19, "max_len": 10}}))
    model, data = tmp_path / "model", tmp_path / "test.jsonl"  # a pretrained policy's files
    model.mkdir()
    (model / "config.json").write_text("{}")
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    return {"tmp": tmp_path, "file": tmp_path / "file", "short": short, "model": model,
            "data": data}


def _compose(paths, overrides: str):
    extra = overrides.split()
    for name, path in paths.items():
        extra = [o.replace(f"{{{name}}}", str(path)) for o in extra]
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=[f"out_dir={paths['tmp']}/run",
                                            f"cache_dir={paths['tmp']}/ckpt", *extra])


@pytest.mark.parametrize(("entry", "overrides", "key"), CASES,
                         ids=[f"{e}:{o or '(none)'}" for e, o, _ in CASES])
def test_mistake_exits_2_naming_the_key(paths, capsys, entry, overrides, key):
    cfg = _compose(paths, overrides)
    with pytest.raises(SystemExit) as exit_info:
        ENTRIES[entry](cfg)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "Traceback" not in out + err
    assert err.strip().startswith("ttc: configuration error: ")
    assert "\n" not in err.strip(), "one paragraph"
    assert key in err
    assert not (paths["tmp"] / "run").exists()
    assert not (paths["tmp"] / "ckpt").exists()
    assert sorted(p.name for p in paths["tmp"].iterdir()) == ["file", "model", "short",
                                                              "test.jsonl"]


def test_at_least_forty_mistakes_across_every_group():
    assert len(CASES) >= 40
    keys = {k.split(".")[0].split("[")[0] for _, _, k in CASES}
    assert {"task", "policy", "methods", "logger", "reproduce", "eval", "train", "reward",
            "seeds", "budgets", "search_budgets", "out_dir", "cache_dir", "host_devices",
            "name"} <= keys
    assert {"reward.labels", "reward.train"} <= {".".join(k.split(".")[:2]) for _, _, k in CASES}


def _cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=[*overrides, f"out_dir={tmp_path}/run",
                                            f"cache_dir={tmp_path}/ckpt"])


def _stems(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("command", ["run", "train"])
def test_default_and_tiny_configs_validate(tmp_path, command):
    assert isinstance(validate(_cfg(tmp_path), command=command), RunConfig)
    assert isinstance(validate(_cfg(tmp_path, *TINY), command=command), RunConfig)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", _stems("experiment"))
def test_every_experiment_validates(tmp_path, name):
    rc = validate(_cfg(tmp_path, f"+experiment={name}"), command="reproduce")
    assert rc.reproduce is not None and rc.reproduce.claim


def test_experiment_methods_are_entries_of_the_repro_grid():
    """An experiment that lists its own methods shares records with the other reproductions
    (outputs/repro/), so each of its entries must be one of conf/method/repro.yaml's."""
    grid = [dict(m) for m in OmegaConf.load(Path(CONF_DIR) / "method" / "repro.yaml").methods]
    listed = 0
    for name in _stems("experiment"):
        exp = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{name}.yaml")
        for m in exp.get("methods") or []:
            assert dict(m) in grid, (name, dict(m))
            listed += 1
    assert listed > 0


@pytest.mark.parametrize("name", _stems("method"))
def test_every_method_grid_validates(tmp_path, name):
    assert validate(_cfg(tmp_path, f"method={name}")).methods


@pytest.mark.parametrize("choice", [f"{g}={n}" for g in ("task", "policy", "logger")
                                    for n in _stems(g)])
def test_every_group_choice_validates(tmp_path, choice):
    # a text task needs a pretrained policy and a data file, and the pretrained policy a text
    # task (validation checks that the files exist; it loads neither)
    model, data = tmp_path / "model", tmp_path / "test.jsonl"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    pretrained = ["policy=hf", f"policy.path={model}", f"task.path={data}", "eval.n_problems=1",
                  "method=verifier_free"]
    extra = {**{f"task={n}": pretrained for n in ("gsm8k", "math", "jsonl")},
             "policy=hf": [*pretrained, "task=gsm8k"]}
    validate(_cfg(tmp_path, choice, *extra.get(choice, [])))


def test_the_schema_feeds_the_library_the_same_values(tmp_path):
    cfg = _cfg(tmp_path, *TINY)
    rc = validate(cfg)
    assert rc.train.config() == TrainConfig(**OmegaConf.to_container(cfg.train))
    assert rc.eval_config() == EvalConfig(
        budgets=tuple(cfg.budgets), search_budgets=tuple(cfg.search_budgets),
        seeds=tuple(cfg.seeds), **OmegaConf.to_container(cfg.eval))
    task = rc.build_task()
    assert dataclasses.asdict(task) == OmegaConf.to_container(cfg.task)


@pytest.mark.parametrize("name", sorted(TASK_SECTIONS))
def test_task_sections_mirror_the_task_classes(name):
    section = {f.name for f in dataclasses.fields(TASK_SECTIONS[name])}
    if name in TASKS:
        assert section == {f.name for f in dataclasses.fields(TASKS[name])}
        return
    # a text task: every key is a TextTask field; the others come from the policy or the files
    fields = {f.name for f in dataclasses.fields(TextTask) if f.init}
    assert section <= fields
    assert fields - section == {"tokenizer", "interner", "max_prompt_len", "max_step_len"}


_VALIDATE_WITHOUT_JAX = """
import sys
from hydra import compose, initialize_config_dir
from jax._src import xla_bridge
from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.schema import validate
with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
    validate(compose("config", overrides=sys.argv[1:]))
assert not xla_bridge.backends_are_initialized(), "validation initialised JAX"
"""


def test_real_cli_prints_no_traceback_and_exits_2(tmp_path):
    """The console scripts check the command line before Hydra creates the run directory; and
    validating leaves JAX uninitialised, so that ``host_devices`` can still split the CPU."""
    dirs = [f"out_dir={tmp_path}/run", f"cache_dir={tmp_path}/ckpt"]
    cases = [
        (["-m", "ttc.cli.run", "eval.top_p=2.0", *dirs], "eval.top_p"),
        (["-m", "ttc.cli.run", "eval.n_problem=3", *dirs], "eval.n_problem"),  # Hydra's own
        (["-m", "ttc.cli.reproduce", "-m", "+experiment=coverage", "eval.temperature=0.5,-1",
          *dirs], "eval.temperature"),
    ]
    procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args, _ in cases]
    clean = subprocess.Popen([sys.executable, "-c", _VALIDATE_WITHOUT_JAX, *dirs],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc, (_, key) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        assert "Traceback" not in out + err
        assert "ttc: configuration error: " in err and key in err
    _, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err
    assert not list(tmp_path.iterdir())
