"""kill -9 in the middle of a sweep (2 worker processes) loses at most the cells in flight,
leaves no worker behind, and a rerun completes it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _specs import spec_text

from robustkit.sweep import expand, load_spec, read_rows, run_sweep
from robustkit.sweep.results import eps_key

MORE_ATTACKS = spec_text(attacks=[
    {"name": "pgd-5", "attack": "pgd", "params": {"steps": 5}}, {"attack": "noise"},
    {"attack": "fgm", "eps": [0.5, 1.0]},
    {"name": "pgd-l2", "attack": "pgd_l2", "params": {"steps": 3}, "eps": [0.5, 1.0]}])


def test_sigkill_mid_sweep_then_rerun_completes_without_duplicates(tmp_path, tiny_spec):
    psutil = pytest.importorskip("psutil")
    path = tiny_spec(MORE_ATTACKS)
    out = tmp_path / "out"
    csv = out / "results.csv"
    cmd = [sys.executable, "-c", "from robustkit.cli import main; main()", "sweep", str(path),
           "--out", str(out), "--workers", "2", "--no-report"]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 600  # a loaded machine may take minutes to start
    n_rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        n_rows = len(read_rows(csv)) if csv.exists() else 0
        if n_rows >= 2:
            break
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2, "the sweep should be running its worker processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker processes outlived the killed sweep: {alive}"
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    spec = load_spec(path)
    expected = {(c.cell_id, eps_key(e)) for c in expand([spec]) for e in c.eps}
    before = read_rows(csv)
    assert 0 < len(before) < len(expected), "the kill should land mid-sweep"
    with open(csv, "ab") as f:  # as if the kill had landed in the middle of a write
        f.write(b"deadbeef,tiny,digits,lin")

    summary = run_sweep([spec], out, threads=1, report=False)
    after = read_rows(csv)
    keys = [(r["cell_id"], r["eps"]) for r in after]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    assert after[:len(before)] == before  # finished rows were kept, not recomputed
    assert summary.skipped >= len({r["cell_id"] for r in before}) - 1
    assert all(r["status"] == "ok" for r in after)
    assert not list((out / "models").glob(".tmp-*"))
