"""Several ``ttc-run`` processes writing into one run directory at once (a Hydra multirun with a
parallel launcher, a job array): every cell is computed and written exactly once."""

import collections
import json
import re
import subprocess
import sys

from hydra import compose, initialize_config_dir
from test_run import TINY

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.train import run as train

# verifier-free and oracle methods only: no reward model to train, 14 cells
METHODS = ("methods=[{name:single},{name:majority},{name:bon_loglik},{name:coverage},"
           "{name:beam,label:beam_oracle,reward:oracle,beam_width:2},"
           "{name:particle,label:pf_oracle,reward:oracle}]")
WRITERS = 3


def test_concurrent_runs_compute_every_cell_once(tmp_path, capsys):
    args = [*TINY, METHODS, "search_budgets=[2,4]", f"cache_dir={tmp_path}/ckpt",
            f"out_dir={tmp_path}/run", "compilation_cache=false"]
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        train(compose("config", overrides=args))   # the policy, cached for the writers
    capsys.readouterr()
    procs = [subprocess.Popen([sys.executable, "-m", "ttc.cli.run", *args, "host_devices=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(WRITERS)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    keys = collections.Counter(json.loads(x)["key"] for x in lines)
    new = [int(re.search(r"(\d+) new record\(s\)", out).group(1)) for out, _ in outs]
    cells = 1 + 3 * 3 + 2 * 2
    print(f"\n{WRITERS} concurrent ttc-run processes: {len(lines)} records, {len(keys)} "
          f"distinct cells of {cells}, new records per process {new}")
    assert len(keys) == cells and max(keys.values()) == 1
    assert sum(new) == cells   # each cell computed by one process only
    assert not (tmp_path / "run" / "results.jsonl.rejected").exists()
    # the writer that finishes last sees every cell, the other writers' included
    seen = [int(re.search(r"(\d+) of this configuration", out).group(1)) for out, _ in outs]
    assert max(seen) == cells
