"""The wheel installs and runs: ``pip install .`` (not editable), then the console scripts from an
empty directory, with the Hydra configs shipped inside the package."""

import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the built ttc wheel; its dependencies come from this
    environment's site-packages through a ``.pth`` path list (plain paths: the ``.pth`` files
    there, such as an editable install's finder, are not run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", tmp / "dist",
                 "-q")
    assert built.returncode == 0, built.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("ttc-*.whl")
    venv = tmp / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    installed = _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q",
                     whl)
    assert installed.returncode == 0, installed.stderr[-3000:]
    purelib = _run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (Path(purelib.stdout.strip()) / "_ttc_test_deps.pth").write_text("\n".join(sorted(deps)))
    return venv


def test_installed_wheel_runs_from_an_empty_directory(wheel_venv, tmp_path):
    py = wheel_venv / "bin" / "python"
    where = _run(py, "-c", "import ttc, ttc.cli.common as c; print(ttc.__file__); "
                 "print(c.CONF_DIR)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    module, conf = where.stdout.split()
    assert module.startswith(str(wheel_venv)), module   # the wheel, not the checkout
    assert conf.startswith(str(wheel_venv)) and conf.endswith("ttc/conf"), conf
    assert _run(py, "-c", "import experiments", cwd=tmp_path).returncode != 0  # not installed
    for script, extra in (("ttc-run", []), ("ttc-train", []),
                          ("ttc-reproduce", ["+experiment=coverage"])):
        out = _run(wheel_venv / "bin" / script, "--cfg", "job", *extra, "method=majority",
                   cwd=tmp_path)
        assert out.returncode == 0, (script, out.stderr[-3000:])
        assert "methods:\n- name: majority" in out.stdout, (script, out.stdout[-2000:])
    assert list(tmp_path.iterdir()) == []   # --cfg job writes nothing
