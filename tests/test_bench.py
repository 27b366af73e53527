"""The benchmark harness runs end to end in quick mode and writes a well-formed report.

Never asserts on timings or ratios (tests never assert wall times): only on the
report's shape and that measured throughputs are positive.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ttc import registry as REG
from ttc.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench.py"


def _load_bench():
    return load_script("bench")


def _check_report(report: dict, *, hf_expected: bool | None,
                  sections: tuple[str, ...] = ("decode", "methods", "train")) -> None:
    """Checks the keys and the signs of ``report``.

    Args:
        report: the parsed ``bench.json``.
        hf_expected: True if the HF rows must have run, False if they must be skipped, None if
            either is fine (depends on whether the optional ``bench`` extra is installed).
        sections: the sections the run was asked for (exactly these must be there).
    """
    for key in ("command", "machine", "args", "matmul_peak", "peak_gflops", "sections",
                "summary", "peak_rss_mb", "wall_s"):
        assert key in report, key
    m = report["machine"]
    for key in ("cpu_model", "cpu_count", "usable_cores", "python", "jax", "torch",
                "transformers", "loadavg_start", "loadavg_end"):
        assert key in m, key
    assert m["cpu_count"] >= 1
    assert report["matmul_peak"]["jax"]["gflops"] > 0
    assert report["peak_gflops"] > 0
    assert report["peak_rss_mb"] > 0
    assert set(report["sections"]) == set(sections)
    if "methods" in sections:
        methods = report["sections"]["methods"]
        # best-of-N, then every registered search method, in the registry's order
        assert [r["impl"] for r in methods] == ["best_of_n", *REG.names(REG.KIND_SEARCH)]
        assert {"beam", "dvts", "lookahead", "particle"} <= set(REG.names(REG.KIND_SEARCH))
        for r in methods:
            assert r["s_per_token"] > 0 and r["rel_to_bon"] > 0
            assert 0 < r["useful_over_executed"] <= 1
        # at most one compilation per (method, N) over the grid run twice (pool; beam + particle)
        grid, compiles = methods[0]["grid"], methods[0]["compiles_over_grid_x2"]
        assert compiles["generate"] <= len(grid) and compiles["search"] <= 2 * len(grid)

    if "train" in sections:
        train = report["sections"]["train"]
        assert [r["impl"] for r in train] == ["one_device", "side_by_side"]
        assert train[0]["n_params"] > 0 and train[0]["datagen_s_per_step"] > 0
        for r in train:
            if r.get("skipped"):
                assert r["impl"] == "side_by_side" and report["args"]["devices"] == 1
                continue
            assert r["steps_per_s"] > 0 and r["trainings"] == (1 if r is train[0] else 2)
        if not train[1].get("skipped"):
            assert train[1]["speedup"] == pytest.approx(
                train[1]["steps_per_s"] / train[0]["steps_per_s"])
    if "decode" not in sections:
        return
    rows = report["sections"]["decode"]
    impls = {r["impl"] for r in rows}
    devices = report["args"]["devices"]  # ttc's default split; a one-device row is added
    assert impls == {"ttc", "hf-llama", "hf-gpt2"} | ({"ttc-1dev"} if devices > 1 else set())
    assert {r["devices"] for r in rows if r["impl"] == "ttc"} == {devices}
    for r in rows:
        for key in ("size", "batch", "prompt_len", "new_tokens", "d_model", "n_layers"):
            assert key in r, key
        if r.get("skipped"):
            assert not r["impl"].startswith("ttc")
            assert hf_expected is not True, r["skipped"]
            assert "torch/transformers" in r["skipped"] or "--skip-hf" in r["skipped"]
            continue
        if r["impl"].startswith("hf-"):
            assert hf_expected is not False
            assert r["ttc_over_impl"] > 0
        for key in ("tokens_per_s", "tokens_per_s_median", "gflops_useful", "frac_peak",
                    "useful_flops", "n_params", "best_s", "median_s", "warmup_s", "repeats",
                    "peak_rss_mb"):
            assert key in r, key
        assert r["tokens_per_s"] > 0
        assert r["gflops_useful"] > 0
        assert 0 < r["best_s"] <= r["median_s"]
        assert r["n_params"] > 0
    assert [s["size"] for s in report["summary"]] == ["quick"]
    assert report["summary"][0]["ttc_tokens_per_s"] > 0


def test_bench_quick_cli(tmp_path):
    """``python scripts/bench.py --quick`` as a user runs it (HF rows run if torch is present)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        # one torch thread: on a loaded 2-core machine two OpenMP threads can stall for seconds
        [sys.executable, str(BENCH), "--quick", "--hf-threads", "1", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tokens/s" in proc.stdout
    report = json.loads(out.read_text())
    _check_report(report, hf_expected=None)
    assert report["args"]["quick"] is True


def test_bench_degrades_without_torch(tmp_path, monkeypatch, capsys):
    """With torch/transformers unimportable the HF rows say so and the rest of the decode
    section still runs (the methods section never imports torch; the CLI test runs it)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    bench = _load_bench()
    out = tmp_path / "sub" / "bench.json"
    report = bench.main(["--quick", "--sections", "decode", "--out", str(out)])
    assert json.loads(out.read_text())["sections"] == json.loads(json.dumps(report["sections"]))
    _check_report(report, hf_expected=False, sections=("decode",))
    skipped = [r for r in report["sections"]["decode"] if r.get("skipped")]
    assert {r["impl"] for r in skipped} == {"hf-llama", "hf-gpt2"}
    assert all(r["skipped"] == bench.HF_SKIP_REASON for r in skipped)
    assert "skipped: torch/transformers not installed" in capsys.readouterr().out
    assert "torch" not in report["matmul_peak"]


def test_bench_sections_registry():
    """The harness is a registry of sections; bad sizes are refused; quick mode leaves the real
    model out unless it is asked for."""
    bench = _load_bench()
    assert list(bench.SECTIONS) == ["decode", "methods", "train", "real"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "no-such-size"])
    assert bench.parse_args([]).sections == list(bench.SECTIONS)
    assert bench.parse_args(["--quick"]).sections == ["decode", "methods", "train"]
    assert bench.parse_args(["--quick", "--sections", "real"]).sections == ["real"]


def test_bench_real_skips_without_the_model(tmp_path, monkeypatch, capsys):
    """The real-model section names the missing file and returns one skipped row; the path
    comes from --smollm2, else $TTC_SMOLLM2."""
    bench = _load_bench()
    missing = tmp_path / "no.gguf"
    monkeypatch.setenv("TTC_SMOLLM2", str(missing))
    assert bench.smollm2_path(None) == str(missing)
    assert bench.smollm2_path(str(tmp_path / "x.gguf")) == str(tmp_path / "x.gguf")
    rows = bench.bench_real(bench.parse_args(["--sections", "real"]))
    assert len(rows) == 1 and rows[0]["section"] == "real"
    assert str(missing) in rows[0]["skipped"]
    assert "no SmolLM2 GGUF" in capsys.readouterr().out


# ---- scripts/bench_gpu.py: the accelerator benchmark's code paths, at --quick sizes ----------


def _load_bench_gpu():
    return load_script("bench_gpu")


def _finite_positive(row: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert key in row, key
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])


def test_bench_gpu_quick(tmp_path):
    """``bench_gpu.py --quick`` runs decode, pool sampling, PRM scoring and particle filtering
    on a tiny GQA model; every figure is finite, and the roofline fraction is the stated
    formula: (parameter bytes + rows x mean context x KV bytes per token) x steps/s over the
    bandwidth."""
    gpu = _load_bench_gpu()
    assert gpu.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert (tmp_path / "bench_gpu.md").read_text().startswith("# ttc accelerator benchmark")
    assert report["errors"] == [] and report["skipped"] == []
    bw = report["bandwidth"]
    assert bw["bytes_moved"] == 2 * bw["array_bytes"]
    _finite_positive(bw, ("measured_bytes_per_s", "best_s"))
    assert bw["spec_bytes_per_s"] == gpu.spec_bandwidth(bw["device_kind"])[0]
    _finite_positive(report["matmul_peak"], ("flops_per_s",))
    sec = report["sections"]
    assert [r["impl"] for r in sec["methods"]] == ["pool", "particle"]
    assert len(sec["decode"]) == len(sec["prm_scoring"]) == 1

    cfg = gpu.QUICK_MODEL.config("bfloat16", 64)
    kv_tok = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2  # keys and values, bf16
    for r in sec["decode"] + sec["methods"]:
        _finite_positive(r, ("tokens_per_s", "steps_per_s", "bytes_per_step", "mean_context",
                             "achieved_bytes_per_s", "roofline_frac_measured", "best_s"))
        assert r["bandwidth_measured"] == bw["measured_bytes_per_s"]
        assert r["roofline_frac_measured"] == pytest.approx(
            r["bytes_per_step"] * r["steps_per_s"] / bw["measured_bytes_per_s"])
        if bw["spec_bytes_per_s"] is None:
            assert r["roofline_frac_spec"] is None
        else:
            assert r["roofline_frac_spec"] == pytest.approx(
                r["bytes_per_step"] * r["steps_per_s"] / bw["spec_bytes_per_s"])

    d = sec["decode"][0]
    assert d["param_bytes"] == 2 * d["n_params"] == 2 * cfg.n_params  # every parameter bf16
    assert d["kv_bytes_per_token"] == kv_tok
    assert d["mean_context"] == d["prompt_len"] + (d["new_tokens"] + 1) / 2
    assert d["bytes_per_step"] == pytest.approx(
        d["param_bytes"] + d["batch"] * d["mean_context"] * kv_tok)
    assert d["steps_per_s"] == pytest.approx(d["new_tokens"] / d["best_s"])
    assert d["tokens_per_s"] == pytest.approx(d["batch"] * d["new_tokens"] / d["best_s"])

    pool, particle = sec["methods"]
    score = sec["prm_scoring"][0]
    for r in (pool, particle, score):
        _finite_positive(r, ("tokens", "useful_flops", "executed_flops"))
        assert 0 < r["useful_over_executed"] <= 1
    _finite_positive(score, ("tokens_per_s", "useful_flops_per_s", "frac_matmul_peak"))
    assert score["tokens"] == pool["tokens"]  # the pool's solutions are what is scored
    prm_bytes = 2 * gpu.QUICK_MODEL.config("bfloat16", 64, head="scalar").n_params
    assert particle["bytes_per_step"] == pytest.approx(  # policy and PRM, both caches
        d["param_bytes"] + prm_bytes + 2 * particle["batch"] * particle["mean_context"] * kv_tok)
    per_token = (pool["best_s"] + score["best_s"]) / pool["tokens"]
    assert particle["over_pool_prm"] == pytest.approx(
        (particle["best_s"] / particle["tokens"]) / per_token)
    targets = report["targets"]
    assert len(targets) == 2 and all(isinstance(t["met"], bool) for t in targets)
    assert targets[1]["value"] == particle["over_pool_prm"]


def test_bench_gpu_tables_plan_and_deadline(tmp_path):
    """The spec-sheet bandwidths by device kind, the models' published sizes, the run order,
    the CPU refusal and a deadline that skips every cell (exit status 3)."""
    gpu = _load_bench_gpu()
    for kind, bw in [("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", 2.0e12),
                     ("NVIDIA H200", 4.8e12), ("NVIDIA A100-SXM4-40GB", 1.555e12),
                     ("NVIDIA A100-SXM4-80GB", 2.039e12), ("TPU v4", 1.2e12),
                     ("TPU v5 lite", 8.19e11), ("TPU v5", 2.765e12), ("TPU v6 lite", 1.64e12),
                     ("cpu", None)]:
        assert gpu.spec_bandwidth(kind)[0] == bw, kind
    smol, big = gpu.MODELS["smollm2-135m"], gpu.MODELS["llama-1b"]
    assert smol.config("bfloat16", 256).n_params == 134_515_008  # SmolLM2-135M
    assert big.config("bfloat16", 256).n_params == 1_235_814_400  # Llama-3.2-1B
    assert gpu.kv_bytes_per_token(big.config("bfloat16", 256)) == 2 * 16 * 8 * 64 * 2
    assert gpu.kv_bytes_per_token(big.config("float32", 256)) == 2 * 16 * 8 * 64 * 4
    cells = [(s, m.name, b) for s, m, b in gpu.plan([smol, big], [64, 256],
                                                     ["decode", "methods"])]
    assert cells[0] == ("decode", "llama-1b", 256) and len(cells) == 8
    assert cells[4] == ("methods", "llama-1b", 256)  # 16 layers compile before 30
    args = gpu.parse_args(["--set", "decode_new=64", "step_fraction=0.25"])
    assert args.workload.decode_new == 64 and args.workload.step_fraction == 0.25
    with pytest.raises(SystemExit):
        gpu.parse_args(["--set", "no_such_field=1"])
    if gpu.jax.default_backend() == "cpu":
        assert gpu.main(["--out", str(tmp_path / "full")]) == 2  # full sizes need a device
    assert gpu.main(["--quick", "--deadline-s", "1e-9", "--out", str(tmp_path)]) == 3
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert len(report["skipped"]) == 2
    assert all(t["met"] is None for t in report["targets"])
    assert "Errors and skipped cells" in (tmp_path / "bench_gpu.md").read_text()
