"""AutoAttack reports which attack runs at which eps to the open progress bar."""
from __future__ import annotations

import torch

from robustkit import progress
from robustkit.attacks.autoattack import autoattack_curve


def test_status_names_each_attack_and_eps(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    x = torch.rand(12, 6)
    y = model(x).argmax(1)  # all correct: every attack runs
    seen: list[str] = []
    ticker = progress.bar(12, "attack autoattack", "samples")
    monkeypatch.setattr(ticker, "set_postfix_str", lambda s="", refresh=True: seen.append(s))
    try:
        autoattack_curve(model, x, y, eps=[0.01, 0.02], version="fast", steps=3)
    finally:
        ticker.close()
    # the largest eps runs first, on every sample
    assert seen[0] == "autoattack eps 0.02: apgd_ce on 12 of 12 samples"
    names = {(s.split(":")[0], s.split(": ")[1].split()[0]) for s in seen}
    assert names >= {("autoattack eps 0.02", "apgd_ce"), ("autoattack eps 0.02", "apgd_t")}
    assert {n for n, _ in names} <= {"autoattack eps 0.02", "autoattack eps 0.01"}
    # closed: the bar left the open list, status is a no-op again
    assert all(b is not ticker for b in progress._OPEN)
    progress.status("after close")
    assert "after close" not in seen


def test_status_without_bar_is_silent(capsys):
    progress.status("nothing open")
    assert capsys.readouterr() == ("", "")
