"""What ``prepare_process`` does to the process that runs a task: the torch thread count,
and, where ``MALLOC_TRIM_THRESHOLD_`` is set (Dask's nanny sets it for every worker), glibc
thresholds that let freed tensors be reused instead of mapped afresh each time."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from robustkit.executors import prepare_process

# Allocate and free a 4 MiB tensor 50 times; print the minor page faults that took.
PROBE = """
import resource, sys, torch
from robustkit.executors import prepare_process
if sys.argv[1] == "prepared":
    prepare_process(None)
torch.ones(1 << 20).sum()  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    torch.ones(1 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_prepare_process_sets_the_thread_count():
    before = torch.get_num_threads()
    try:
        prepare_process(1)
        assert torch.get_num_threads() == 1
        prepare_process(None)  # None leaves it as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc (Linux)")
def test_a_dask_worker_environment_stops_paying_page_faults_per_tensor():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, check=True,
                             capture_output=True, text=True).stdout
        return int(out.split()[-1])

    plain, prepared = faults("plain"), faults("prepared")
    assert plain > 50 * 500  # 1,024 pages per fresh 4 MiB mapping, at every allocation
    assert prepared < plain / 10
