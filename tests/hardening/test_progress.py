"""Long commands are not silent when stderr is not a terminal: status lines on stderr
every $ROBUSTKIT_PROGRESS_SECONDS, nothing extra on stdout; a bar on a terminal."""
from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

import robustkit.evaluate
from robustkit import progress
from robustkit.cli import main
from robustkit.models import training

# The slow stand-ins below hold work open long enough for several status lines at this
# cadence; what is asserted is the lines' content, never a duration.
TICK, HOLD = "0.01", 0.3


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setenv(progress.ENV, TICK)


def slowed(fn):
    def wrapper(*args, **kwargs):
        time.sleep(HOLD)
        out = fn(*args, **kwargs)
        time.sleep(HOLD)
        return out
    return wrapper


def check_streams(res, pattern):
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout: the JSON document and nothing else
    lines = res.stderr.splitlines()
    assert lines and all(re.fullmatch(pattern, line) for line in lines), lines[:5]
    return doc, lines


def test_attack_reports_samples_and_eps_during_a_long_call(monkeypatch):
    monkeypatch.setattr(robustkit.evaluate, "evaluate", slowed(robustkit.evaluate.evaluate))
    res = CliRunner().invoke(main, ["attack", "--model", "linear", "--attack", "fgsm",
                                    "--eps", "0.1", "--eps", "0.2", "--limit", "40", "--json"])
    # the training note, then progress: "attack fgsm: 80/80 samples, eps 0.2, 1 s"
    assert res.exit_code == 0, res.output
    res_lines = res.stderr.splitlines()
    assert res_lines[0].startswith("no stored model 'linear'")
    rows = json.loads(res.stdout)
    assert [r["eps"] for r in rows] == [0.1, 0.2]
    ticks = [line for line in res_lines[1:] if line.startswith("attack fgsm:")]
    assert ticks and all(re.fullmatch(r"attack fgsm: \d+/80 samples, (eps 0\.[12], )?\d+ s", t)
                         for t in ticks)
    assert ticks[0].startswith("attack fgsm: 0/80") and "80/80 samples, eps 0.2" in ticks[-1]


def test_score_reports_attack_calls(tmp_path, monkeypatch):
    ws = str(tmp_path)
    train = CliRunner().invoke(main, ["train", "--model", "linear", "--param", "epochs=2",
                                      "--workdir", ws, "--quiet"])
    assert train.exit_code == 0, train.output
    import robustkit.defenses.score as score_mod

    monkeypatch.setattr(score_mod, "score", slowed(score_mod.score))
    res = CliRunner().invoke(main, ["score", "--model", "linear-digits", "--eps", "0.1",
                                    "--attack", "fgsm", "--pgd-steps", "2", "--pgd-restarts",
                                    "1", "--score-limit", "40", "--workdir", ws, "--json"])
    doc, lines = check_streams(res, r"score linear-digits: (\d+ attack calls, )?"
                                    r"([\w ()]+ eps [\d.]+, )?\d+ s")
    assert doc["name"] == "linear-digits"
    assert "pgd (large eps check) eps 1" in lines[-1]


def test_defend_reports_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "loss_fn", slowed(training.loss_fn))
    res = CliRunner().invoke(main, ["defend", "--model", "linear", "--defense", "fgsm_rs",
                                    "--eps", "0.1", "--epochs", "2", "--limit", "100",
                                    "--model-param", "batch_size=100", "--no-score",
                                    "--workdir", str(tmp_path), "--json"])
    doc, lines = check_streams(res, r"[\w-]+: \d/2 epoch, (loss=[\d.]+, acc=[\d.]+, )?\d+ s")
    assert doc["defense"] == "fgsm_rs"
    assert any(re.match(r"[\w-]+: 1/2 epoch, loss=", line) for line in lines)


def test_sweep_reports_cells(tiny_sweep, monkeypatch):
    from robustkit.sweep import runner

    monkeypatch.setattr(runner, "wave_task", slowed(runner.wave_task))
    res = CliRunner().invoke(main, ["sweep", str(tiny_sweep), "--out",
                                    str(tiny_sweep.parent / "out"), "--workers", "0",
                                    "--no-report", "--json"])
    doc, lines = check_streams(res, r"sweep: \d/2 cells, ([^,]+, )?\d+ s")
    assert doc["run"] == 2
    assert any(line.startswith("sweep: 1/2 cells") for line in lines)


@pytest.fixture()
def tiny_sweep(tmp_path):
    spec = tmp_path / "t.toml"
    spec.write_text('[sweep]\nname = "t"\neps = [0.1]\n[[datasets]]\nname = "digits"\n'
                    'test_limit = 20\n[[models]]\nfamily = "linear"\nparams = { epochs = 1 }'
                    '\n[[attacks]]\nattack = "fgsm"\n[[attacks]]\nattack = "noise"\n')
    return spec


def test_a_terminal_gets_a_bar_and_anything_else_a_ticker(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: False)
    t = progress.bar(10, "work", "items")
    t.update(3)
    t.set_postfix_str("now this")
    assert isinstance(t, progress.Ticker)
    assert re.fullmatch(r"work: 3/10 items, now this, \d+ s", t.line())
    t.close()
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)
    bar = progress.bar(10, "work", "items")
    from tqdm.std import tqdm

    assert isinstance(bar, tqdm) and not isinstance(bar, progress.Ticker)
    bar.close()


@pytest.mark.parametrize("value, seconds", [("2.5", 2.5), ("0", 10.0), ("-1", 10.0),
                                            ("soon", 10.0), ("inf", 10.0), ("nan", 10.0),
                                            ("1e-9", 10.0), ("86400", 86400.0)])
def test_cadence_comes_from_the_environment(monkeypatch, value, seconds):
    monkeypatch.setenv(progress.ENV, value)
    assert progress.interval() == seconds
