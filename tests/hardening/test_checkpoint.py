"""Defense checkpoints are one atomic unit: a kill at any moment leaves a checkpoint a
rerun resumes from, and `defend --force` starts over from any state."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import robustkit.defenses.checkpoint as ck_mod
from robustkit.cli import main
from robustkit.defenses import defend
from robustkit.defenses.checkpoint import CheckpointError, read_checkpoint_meta

EPS = 0.1
KW = {"model_params": {"epochs": 3}, "seed": 1, "watch_size": 20}


@pytest.fixture(scope="module")
def data(digits_train):
    return digits_train.x[:200], digits_train.y[:200]


@pytest.fixture(scope="module")
def reference(data):
    return defend("fgsm_rs", "linear", *data, eps=EPS, **KW)


def test_kill_during_checkpoint_write_resumes_to_the_same_weights(tmp_path, monkeypatch,
                                                                  data, reference):
    """The process dies while the epoch-1 checkpoint is being written (half a file on
    disk, as after a kill -9): the epoch-0 checkpoint is intact and a rerun resumes."""
    real = ck_mod.save_file
    calls = []

    def dying_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as fh:
                fh.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"partial")
            raise KeyboardInterrupt  # the kill
        return real(tensors, path, metadata=metadata)

    ck = tmp_path / "ck"
    monkeypatch.setattr(ck_mod, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        defend("fgsm_rs", "linear", *data, eps=EPS, checkpoint=ck, **KW)
    monkeypatch.setattr(ck_mod, "save_file", real)
    assert read_checkpoint_meta(ck)["epoch"] == 0
    (ck / ".checkpoint.safetensors.stale.tmp").write_bytes(b"left by a kill -9")
    seen = []
    res = defend("fgsm_rs", "linear", *data, eps=EPS, checkpoint=ck,
                 on_epoch=lambda e, m, s: seen.append(e), **KW)
    assert seen == [1, 2]
    for (k, a), b in zip(reference.model.state_dict().items(),
                         res.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint.safetensors"]


def test_checkpoint_is_a_single_file_holding_its_json(tmp_path, data):
    ck = tmp_path / "ck"
    defend("fgsm_rs", "linear", *data, eps=EPS, checkpoint=ck, **KW)
    assert [p.name for p in ck.iterdir()] == ["checkpoint.safetensors"]
    meta = read_checkpoint_meta(ck)
    assert meta["epoch"] == 2 and meta["finished"] and len(meta["history"]) == 3


def _legacy_pair(folder):
    """What robustkit-checkpoint-1 left after a kill between its two writes."""
    folder.mkdir(parents=True)
    (folder / "checkpoint.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (folder / "checkpoint.json").write_text(json.dumps({"format": "robustkit-checkpoint-1",
                                                         "sha256": "0" * 64}))


def test_legacy_or_broken_checkpoint_names_the_way_out(tmp_path, data):
    _legacy_pair(tmp_path / "old")
    with pytest.raises(CheckpointError, match="delete the folder to start over"):
        defend("fgsm_rs", "linear", *data, eps=EPS, checkpoint=tmp_path / "old", **KW)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="start over"):
        defend("fgsm_rs", "linear", *data, eps=EPS, checkpoint=bad, **KW)


def test_defend_force_starts_over_from_a_broken_checkpoint(tmp_path):
    target = tmp_path / "runs" / "lin"
    _legacy_pair(target / "checkpoint")
    args = ["defend", "--model", "linear", "--defense", "fgsm_rs", "--eps", "0.1",
            "--epochs", "1", "--limit", "150", "--no-score", "--name", "lin",
            "--workdir", str(tmp_path / "runs"), "--quiet", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0]
    res = CliRunner().invoke(main, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["name"] == "lin"
    assert (target / "model.json").is_file() and not (target / "checkpoint").exists()
