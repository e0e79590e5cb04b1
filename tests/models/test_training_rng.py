"""Seeded initialization is reproducible when tasks run in threads of one process (Dask)."""
import threading

import torch
from torch import nn

from robustkit.models.training import seeded


def weights(seed: int) -> torch.Tensor:
    with seeded(seed):
        m = nn.Sequential(*[nn.Linear(32, 32) for _ in range(10)])
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_seeded_blocks_in_threads_build_the_serial_weights():
    expected = {0: weights(0), 1: weights(1)}
    assert not torch.equal(expected[0], expected[1])
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(6)}

    def work(i: int) -> None:
        for _ in range(30):
            got[i].append(weights(i % 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ws in got.items():
        assert all(torch.equal(w, expected[i % 2]) for w in ws), f"thread {i} drew other weights"


def test_seeded_restores_the_callers_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    weights(5)
    assert torch.equal(torch.random.get_rng_state(), before)
