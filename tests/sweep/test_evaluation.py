"""System rows of a sweep: ``rejection_rate`` is what the system does with flagged inputs
(a detector rejects them, a PRN rectifies and classifies them), ``flagged_rate`` what the
detector flags."""
from __future__ import annotations

import json

import pytest

from robustkit.sweep import load_spec, read_rows, run_sweep

# fpr = 0.5 puts the thresholds at the clean median: many inputs are flagged at any eps.
SYSTEMS = """
[[defenses]]
name = "det"
defense = "detector"
params = { eps = 0.3, n_uaps = 1, n_synthetic = 1, uap_epochs = 1, epochs = 2, fpr = 0.5 }
models = ["mlp-16"]

[[defenses]]
name = "prn"
defense = "prn"
models = ["mlp-16"]

[defenses.params]
eps = 0.3
n_uaps = 1
n_synthetic = 1
uap_epochs = 1
epochs = 1
width = 4
blocks = 1
detector_epochs = 2
fpr = 0.5
"""


def test_prn_rows_reject_nothing_and_detector_rows_reject_what_they_flag(tmp_path, tiny_spec):
    from robustkit import defenses

    if not {"detector", "prn"} <= set(defenses.names()):
        pytest.skip("detector/prn defenses not available")
    spec = load_spec(tiny_spec(SYSTEMS))
    summary = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert summary.errors == 0, [r["error"] for r in rows if r["error"]]
    by_defense: dict[str, list[dict[str, str]]] = {"det": [], "prn": []}
    for r in rows:
        if r["defense"] in by_defense:
            by_defense[r["defense"]].append(r)
    assert all(len(v) == 4 for v in by_defense.values())  # (fgsm, pgd-3) x 2 eps
    flagged = {d: [json.loads(r["extra"])["flagged_rate"] for r in v]
               for d, v in by_defense.items()}
    assert all(0 < f <= 1 for f in flagged["det"] + flagged["prn"])
    # the detector rejects exactly the inputs it flags
    assert [float(r["rejection_rate"]) for r in by_defense["det"]] == flagged["det"]
    # the PRN rectifies flagged inputs and classifies them: no rejection at all
    assert [float(r["rejection_rate"]) for r in by_defense["prn"]] == [0.0] * 4
