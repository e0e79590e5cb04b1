"""A sweep resumes past any checkpoint state a killed or older run left behind."""
from __future__ import annotations

import json

from _specs import FGSM, spec_text

from robustkit.sweep import expand, parse_spec, run_sweep

SPEC = spec_text(sweep={"name": "adv", "eps": [0.1], "gallery": 0},
                 datasets=[{"name": "digits", "train_limit": 150, "test_limit": 20}],
                 models=[{"family": "linear", "params": {"epochs": 1}}],
                 defenses=[{"defense": "fgsm_rs", "name": "fgsm_rs",
                            "params": {"eps": 0.1, "watch_size": 0}}],
                 attacks=[FGSM])


def test_a_checkpoint_the_run_cannot_resume_from_is_discarded(tmp_path):
    spec = parse_spec(SPEC, "adv.toml")
    (cell,) = expand([spec])
    models_dir = tmp_path / "models"
    ckpt = models_dir / f".ckpt-{cell.job.key}"
    ckpt.mkdir(parents=True)
    # What an interrupted run of robustkit-checkpoint-1 left: a tensor file whose JSON
    # names another hash.
    (ckpt / "checkpoint.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (ckpt / "checkpoint.json").write_text(json.dumps({"format": "robustkit-checkpoint-1"}))
    summary = run_sweep([spec], tmp_path / "out", models_dir=models_dir, report=False)
    assert (summary.run, summary.errors, summary.models_trained) == (1, 0, 1)
    assert summary.model_errors == {}
    assert not ckpt.exists() and (models_dir / cell.job.key / "model.json").is_file()
