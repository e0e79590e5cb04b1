"""``robustkit defend`` and ``robustkit score`` through click's CliRunner."""
from __future__ import annotations

import json

import pytest
import torch
from _fixtures import auc_by_pairs, tpr_at_fpr
from click.testing import CliRunner

from robustkit import store
from robustkit.cli import main

FAST = ["--attack", "fgsm", "--pgd-steps", "3", "--pgd-restarts", "1", "--score-limit", "100",
        "--fit-limit", "200", "--device", "cpu"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def defended(workdir):
    result = CliRunner().invoke(main, [
        "defend", "--model", "linear", "--defense", "fgsm_rs", "--eps", "0.1", "--epochs", "3",
        "--param", "watch_size=50", "--name", "lin-fgsmrs", "--workdir", str(workdir),
        "--json", *FAST])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_defend_trains_stores_and_scores(defended, workdir):
    assert defended["defense"] == "fgsm_rs" and defended["params"]["eps"] == 0.1
    assert defended["train_seconds"] > 0 and defended["time_ratio"] > 0
    # The cost ratio is one of process CPU times, and says so.
    assert defended["time_ratio_clock"] == "cpu" and defended["train_cpu_seconds"] > 0
    assert defended["time_ratio"] == defended["train_cpu_seconds"] / defended["plain_cpu_seconds"]
    rows = defended["score"]["rows"]
    assert {r["attack"] for r in rows} == {"fgsm", "pgd", "noise"}
    assert defended["score"]["possible_gradient_masking"] is False
    folder = workdir / "lin-fgsmrs"
    _model, meta = store.load(folder)
    assert meta.extra["defense"] == "fgsm_rs" and len(meta.extra["history"]) == 3
    assert meta.metrics["test_accuracy"] == pytest.approx(defended["clean_accuracy"])
    store.load(folder, name="plain")
    assert (folder / "score.json").is_file() and not (folder / "checkpoint").exists()


def test_score_a_stored_model(defended, workdir):
    result = CliRunner().invoke(main, [
        "score", "--model", "lin-fgsmrs", "--eps", "0.05", "--eps", "0.1",
        "--workdir", str(workdir), *FAST])
    assert result.exit_code == 0, result.output
    assert "sanity checks: " in result.output and "fgsm" in result.output
    assert "training:" in result.output  # timing comes from the stored metadata
    assert "plain training in process CPU time" in result.output


def test_defend_retrain_on_svm_text_output(workdir):
    result = CliRunner().invoke(main, [
        "defend", "--model", "svm", "--defense", "retrain", "--eps", "0.1", "--param",
        "rounds=1", "--limit", "300", "--name", "svm-rt", "--workdir", str(workdir), *FAST])
    assert result.exit_code == 0, result.output
    assert "svm + retrain on digits" in result.output
    assert "sanity checks:" in result.output


def test_usage_and_runtime_errors(defended, workdir):
    run = CliRunner().invoke
    bad_defense = run(main, ["defend", "--model", "linear", "--defense", "nope", "--eps", "0.1"])
    assert bad_defense.exit_code == 2 and "fgsm_rs" in bad_defense.output
    wrong_family = run(main, ["defend", "--model", "svm", "--defense", "fgsm_rs", "--eps",
                              "0.1", "--workdir", str(workdir)])
    assert wrong_family.exit_code == 2 and "does not apply" in wrong_family.output
    bad_param = run(main, ["defend", "--model", "linear", "--defense", "pgd", "--eps", "0.1",
                           "--param", "stepz=3", "--workdir", str(workdir)])
    assert bad_param.exit_code == 2 and "steps" in bad_param.output
    exists = run(main, ["defend", "--model", "linear", "--defense", "fgsm_rs", "--eps", "0.1",
                        "--name", "lin-fgsmrs", "--workdir", str(workdir), "--no-score"])
    assert exists.exit_code == 1 and "already exists" in exists.output
    missing = run(main, ["score", "--model", "ghost", "--eps", "0.1", "--workdir",
                         str(workdir)])
    assert missing.exit_code == 1 and "lin-fgsmrs" in missing.output


def test_defend_reuses_a_stored_plain_model(workdir):
    run = CliRunner().invoke
    trained = run(main, ["train", "--model", "linear", "--param", "epochs=2", "--name",
                         "lin-plain", "--workdir", str(workdir), "--device", "cpu", "--json"])
    assert trained.exit_code == 0, trained.output
    seconds = json.loads(trained.output)["seconds"]
    result = run(main, ["defend", "--model", "linear", "--defense", "pgd", "--eps", "0.1",
                        "--epochs", "2", "--param", "steps=2", "--plain", "lin-plain",
                        "--name", "lin-pgd", "--workdir", str(workdir), "--no-score",
                        "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["plain_seconds"] == pytest.approx(seconds) and "score" not in out
    wrong = run(main, ["defend", "--model", "mlp", "--defense", "pgd", "--eps", "0.1",
                       "--plain", "lin-plain", "--workdir", str(workdir), "--no-score"])
    assert wrong.exit_code == 1 and "is a 'linear' model" in wrong.output


# Tiny detector-like defenses: one real UAP, few epochs (the numbers are not the point).
TINY_UAPS = ["--param", "n_uaps=1", "--param", "n_synthetic=1", "--param", "uap_epochs=1"]


# The adaptive UAP through a PRN is the slow part: the prn case scores fgsm only.
@pytest.mark.parametrize("defense, extra, attacks", [
    ("detector", ["--param", "epochs=2"], ("uap", "fgsm")),
    ("prn", ["--param", "epochs=1", "--param", "detector_epochs=2", "--param", "width=4",
             "--param", "blocks=1"], ("fgsm",)),
])
def test_defend_with_a_detector_then_score_it_as_a_system(defense, extra, attacks, workdir):
    run = CliRunner().invoke
    name = f"mlp-{defense}"
    result = run(main, ["defend", "--model", "mlp", "--defense", defense, "--eps", "0.3",
                        "--epochs", "3", "--limit", "300", "--name", name, "--workdir",
                        str(workdir), "--no-score", "--json", "--device", "cpu",
                        *TINY_UAPS, *extra])
    assert result.exit_code == 0, result.output
    assert (workdir / name / "detector.json").is_file()
    # no --eps: a defended model is scored at the eps it was trained at
    chosen = [arg for a in attacks for arg in ("--attack", a)]
    scored = run(main, ["score", "--model", name, *chosen, "--workdir", str(workdir),
                        "--json", *FAST, "--fit-limit", "100"])
    assert scored.exit_code == 0, scored.output
    rows = json.loads(scored.output)["score"]["rows"]
    assert {r["eps"] for r in rows} == {0.3}
    system = {r["attack"]: r for r in rows if r["attack"].startswith("system:")}
    want = {f"system:{a}{s}" for a in attacks for s in ("", "+adaptive")}
    # score always adds PGD; adaptive fgsm is adaptive PGD, so it is one row, under pgd
    want = (want - {"system:fgsm+adaptive"}) | {"system:pgd+adaptive"}
    assert want <= set(system) and "system:fgsm+adaptive" not in system
    _check_system_fgsm_row(system["system:fgsm"], workdir / name)
    bare = run(main, ["score", "--model", name, "--no-detector", "--attack", "fgsm",
                      "--workdir", str(workdir), "--json", *FAST])
    assert bare.exit_code == 0, bare.output
    assert not any(r["attack"].startswith("system:")
                   for r in json.loads(bare.output)["score"]["rows"])


def _check_system_fgsm_row(row, folder):
    """The row, recomputed from the stored system on the inputs score used (the seed-0
    subset of 100 test inputs): AUC by counting (adversarial, clean) score pairs, the
    system accuracy from its own decisions on the same FGSM inputs."""
    from robustkit import data as datasets
    from robustkit.defenses.detection import attack_system
    from robustkit.defenses.system import load_system, system_accuracy

    model, _ = store.load(folder)
    system = load_system(folder, model)
    x, y, _ = datasets.subset(datasets.load_dataset("digits", "test", seed=0), 100, seed=0)
    x_adv, _ = attack_system(system, "fgsm", 0.3, x, y, adaptive=False, fit_x=x, fit_y=y)
    with torch.no_grad():
        clean, adv = system.score(x), system.score(x_adv)
        dec, clean_dec = system.decide(x_adv), system.decide(x)
    assert row["detection_auc"] == pytest.approx(auc_by_pairs(clean, adv), abs=1e-12)
    assert row["tpr_at_5fpr"] == pytest.approx(tpr_at_fpr(clean, adv), abs=1e-12)
    assert row["robust_accuracy"] == pytest.approx(
        system_accuracy(dec, y, adversarial=True), abs=1e-12)
    assert row["clean_accuracy"] == pytest.approx(
        system_accuracy(clean_dec, y, adversarial=False), abs=1e-12)
    assert row["classifier_robust_accuracy"] == pytest.approx(
        float((model(x_adv).argmax(1) == y).double().mean()), abs=1e-7)


def test_score_needs_eps_for_a_model_without_a_training_eps(workdir):
    run = CliRunner().invoke
    trained = run(main, ["train", "--model", "linear", "--param", "epochs=1", "--name",
                         "lin-noeps", "--workdir", str(workdir), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    result = run(main, ["score", "--model", "lin-noeps", "--workdir", str(workdir)])
    assert result.exit_code == 2 and "--eps is required" in result.output
