"""End to end: the main job on a tiny config writes its outputs, resumes, and fails politely."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.run import run
from ttc.cli.train import run as train

TINY = [
    "task.min_ops=1", "task.max_ops=2", "policy.d_model=32", "policy.d_ff=64",
    "train.steps=30", "train.eval_every=15", "train.eval_problems=16", "train.batch_size=32",
    "eval.n_problems=12", "budgets=[1,2,4]", "search_budgets=[4]", "progress=false",
    "reward.labels.problems=8", "reward.labels.samples_per_problem=2", "reward.labels.rollouts=2",
    "reward.train.steps=6", "reward.train.eval_every=3", "reward.train.batch_size=16",
    "reward.base_steps=40",
]


def _cfg(tmp_path, *extra):
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=[*TINY, f"out_dir={tmp_path}/run",
                                            f"cache_dir={tmp_path}/ckpt", *extra])


def test_main_job_writes_outputs_and_resumes(tmp_path, capsys):
    run(_cfg(tmp_path))
    out = tmp_path / "run"
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    methods = {r["method"] for r in recs}
    pool = {"majority", "bon_loglik", "coverage", "bon_prm", "wmaj_prm", "bon_orm"}
    search = {"beam_prm", "dvts_prm", "lookahead_prm", "pf_prm", "pg_prm", "pt_prm",
              "rebase_prm"}
    assert methods == {"single", *pool, *search}  # the default grid (conf/method/all.yaml)
    assert len(recs) == 1 + len(pool) * 3 + len(search)  # search at N=4 only (compile time)
    by = {(r["method"], r["budget"]): r for r in recs}
    # reward-model FLOPs and lookahead rollouts are charged
    assert by[("bon_prm", 4)]["flops_components"]["reward"]["useful"] > 0
    assert by[("lookahead_prm", 4)]["flops_components"]["lookahead"]["useful"] > 0
    assert by[("lookahead_prm", 4)]["flops_useful"] > by[("beam_prm", 4)]["flops_useful"]
    assert "final_auc" in by[("beam_prm", 4)]["config"]["reward_model"]["quality"]
    for r in recs:
        for k in ("accuracy", "ci_low", "ci_high", "generations", "tokens", "flops_useful",
                  "flops_executed", "wall_time_s", "config"):
            assert k in r
        assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1
    maj = sorted((r["budget"], r["flops_useful"]) for r in recs if r["method"] == "majority")
    dec = [f for _, f in maj]
    assert dec[0] < dec[1] < dec[2]
    assert (out / "frontier.csv").read_text().startswith("method,budget")
    assert (out / "pareto.png").stat().st_size > 1000
    # second run: resumes, adds nothing, reuses the cached policy
    capsys.readouterr()
    run(_cfg(tmp_path))
    assert "0 new record(s)" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == len(recs)
    # ttc-train of the same configuration finds every model the run trained (the policy, the
    # verifier's LM and the PRM/ORM on it) and trains none
    models = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir())
    assert any(m.startswith("prm-") for m in models) and len(models) >= 5
    train(_cfg(tmp_path))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir()) == models
    # another configuration into the same directory: its outputs show only its own records
    res = run(_cfg(tmp_path, "eval.n_problems=8", "methods=[{name:single}]"))
    assert [r["method"] for r in res.records] == ["single"]
    assert f"and {len(recs)} of earlier configurations" in capsys.readouterr().out
    rows = (out / "frontier.csv").read_text().splitlines()[1:]
    assert rows and all(r.startswith("single,") for r in rows)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budgets=[1,-4]", "budgets must be positive"),
        ("policy.checkpoint=/nonexistent/ckpt", "not a ttc checkpoint"),
        ("methods=[{name:nope}]", "unknown method"),
        ("methods=[{name:beam,beam_width:0}]", "beam_width"),
        ("methods=[{name:majority,reward:prm}]", "does not take"),
        ("methods=[{name:beam,reward:orm}]", "needs a step reward"),
        ("task.min_ops=0", "task:"),
        ("reward.head=bogus", "reward.head must be"),
        ("reward.base_steps=0", "reward.base_steps must be"),
        ("reward.base=nope", "no policy config 'nope'"),
        ("host_devices=0", "host_devices must be"),
    ],
)
def test_bad_overrides_exit_with_one_paragraph(tmp_path, capsys, override, message):
    # in-process (the console script runs the same ``run`` on the composed config; real CLI
    # processes are checked in test_config_errors.py)
    with pytest.raises(SystemExit) as exit_info:
        run(_cfg(tmp_path, override))
    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert message in err
    assert "Traceback" not in err
    # the mistake is caught before any model is trained
    assert not list((tmp_path / "ckpt").glob("policy-*"))


def test_unknown_method_group_is_a_hydra_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ttc.cli.run", f"out_dir={tmp_path}/r", "method=nope"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "method" in proc.stderr
    assert "Warning" not in proc.stderr  # e.g. Hydra's version_base deprecation (VERSION_BASE)


def test_reproduce_writes_a_claim_report(tmp_path, capsys):
    from ttc.cli.reproduce import reproduce

    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        cfg = compose("config", overrides=[
            "+experiment=verifier_free", *TINY, f"out_dir={tmp_path}/run",
            f"cache_dir={tmp_path}/ckpt",
            "methods=[{name:single},{name:majority},{name:bon_loglik}]"])
    report = reproduce(cfg)
    assert report.claim == "verifier_free" and report.held in (True, False)
    md = (tmp_path / "run" / "verifier_free.md").read_text()
    assert "Wang et al. 2025" in md and "| N | majority | bon_loglik |" in md
    assert (tmp_path / "run" / "verifier_free.png").stat().st_size > 1000
    line = (tmp_path / "run" / "claims.jsonl").read_text().splitlines()[-1]
    assert '"claim": "verifier_free"' in line
    assert "[verifier_free]" in capsys.readouterr().out


def test_reproduce_without_an_experiment_is_a_config_error(tmp_path, capsys):
    from ttc.cli.reproduce import reproduce

    with pytest.raises(SystemExit) as e:
        reproduce(_cfg(tmp_path))
    assert e.value.code == 2
    assert "+experiment=" in capsys.readouterr().err
