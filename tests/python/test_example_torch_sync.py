# SPDX-License-Identifier: MIT
# Smoke test of examples/torch_sync_train.py: launched by torch.distributed.run on 2 processes, and
# as one plain process. Synchronized batch statistics make the two runs train alike.
import os
import pathlib
import re
import subprocess
import sys

import bn1d

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "torch_sync_train.py"
EPOCHS = 4


def run_example(tmp_path, launcher):
    """The example's stdout; fails the test on a non-zero exit or after 180 s."""
    package_dir = str(pathlib.Path(bn1d.__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_dir, os.environ.get("PYTHONPATH"))
                                          if p))
    command = [sys.executable, *launcher, str(EXAMPLE), "--epochs", str(EPOCHS)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def epoch_losses(out):
    return [float(v) for v in re.findall(r"^epoch +\d+ +loss ([\d.]+)", out, re.MULTILINE)]


def test_two_processes_under_torch_distributed_run(tmp_path):
    # --redirects/--tee 2: torch 1.13's launcher cannot parse their default "0" on Python 3.11
    # (AttributeError: 'NoneType' object has no attribute 'get'); --standalone picks a free port.
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "--redirects", "2", "--tee", "2", "--log_dir", str(tmp_path / "logs")]
    two = run_example(tmp_path, launcher)
    assert "2 process(es), global batch 96 (48 per process)" in two
    assert "batch norm layers: SyncBatchNorm; running statistics identical on all 2 rank(s)" in two
    accuracy = float(re.search(r"final test accuracy ([\d.]+) %", two).group(1))
    assert accuracy > 90.0, two

    one = run_example(tmp_path, [])
    assert "1 process(es), global batch 96 (96 per process)" in one
    # The same global batches, statistics and averaged gradients: the same training, up to the
    # float32 rounding of a different summation order (plain BatchNorm1d per process differs
    # by about 1e-2 here).
    losses_two, losses_one = epoch_losses(two), epoch_losses(one)
    assert len(losses_two) == len(losses_one) == EPOCHS
    for a, b in zip(losses_two, losses_one):
        assert abs(a - b) <= 1e-3, (losses_two, losses_one)
