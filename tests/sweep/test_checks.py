"""Gradient-masking flags on PGD rows, from FGSM/noise rows of the same model."""
from __future__ import annotations

from _specs import FGSM, spec_text

from robustkit.sweep import expand, parse_spec
from robustkit.sweep.checks import Evidence, is_checked

SPEC = spec_text(datasets=[{"name": "digits"}], models=[{"family": "linear"}],
                 attacks=[FGSM, {"attack": "noise"}, {"attack": "pgd", "eps": [0.1, 0.2, 1.0]}])


def test_flags_name_each_failed_check_on_its_eps_row():
    cells = expand([parse_spec(SPEC)])
    pgd = cells[2]
    assert [is_checked(c) for c in cells] == [False, False, True]
    key = pgd.job.key
    ev = Evidence([
        {"attack_method": "fgsm", "status": "ok", "adaptive": "false", "model_key": key,
         "eps": "0.1", "robust_accuracy": "0.2"},
        {"attack_method": "fgsm", "status": "ok", "adaptive": False, "model_key": key,
         "eps": 0.2, "robust_accuracy": 0.1},
        {"attack_method": "noise", "status": "ok", "adaptive": False, "model_key": key,
         "eps": 0.2, "robust_accuracy": 0.0},
        {"attack_method": "fgsm", "status": "ok", "adaptive": False, "model_key": "other",
         "eps": 0.1, "robust_accuracy": 0.9},
    ])
    rows = [{"eps": 0.1, "status": "ok", "robust_accuracy": 0.5},   # weaker than FGSM
            {"eps": 0.2, "status": "ok", "robust_accuracy": 0.05},  # fine vs FGSM; noise 0.0
            {"eps": 1.0, "status": "ok", "robust_accuracy": 0.3}]   # not ~0 at eps = 1
    flagged = ev.flag(pgd, rows)
    assert flagged[0]["masking_flags"].startswith("iterative_not_weaker: PGD 0.500 vs FGSM")
    assert flagged[1]["masking_flags"].startswith("white_box_beats_noise")
    assert flagged[2]["masking_flags"].startswith("large_eps: PGD accuracy 0.300")
    clean = ev.flag(pgd, [{"eps": 0.1, "status": "ok", "robust_accuracy": 0.1}])
    assert clean[0]["masking_flags"] == ""


SYSTEM_SPEC = spec_text(
    datasets=[{"name": "digits"}], models=[{"family": "mlp"}],
    defenses=[{"name": "none", "defense": "none"}, {"defense": "detector"}],
    attacks=[{"attack": "autoattack"}, {"attack": "pgd", "eps": [0.1, 0.2]},
             {"attack": "autoattack", "adaptive": True},
             {"attack": "pgd", "eps": [0.1, 0.2], "adaptive": True}])


def test_pgd_is_compared_with_autoattack_plain_and_adaptive():
    cells = expand([parse_spec(SYSTEM_SPEC)])
    checked = {(c.job.defense.defense, c.attack.attack, c.attack.adaptive)
               for c in cells if is_checked(c)}
    # Plain PGD on the plain model, adaptive PGD on the system: nothing else.
    assert checked == {("none", "pgd", False), ("detector", "pgd", True)}
    plain = next(c for c in cells if is_checked(c) and not c.attack.adaptive)
    system = next(c for c in cells if is_checked(c) and c.attack.adaptive)
    ev = Evidence([
        {"attack_method": "autoattack", "status": "ok", "adaptive": False,
         "model_key": plain.job.key, "eps": 0.1, "robust_accuracy": 0.3},
        # The system's non-adaptive AutoAttack attacks the bare classifier: no partner.
        {"attack_method": "autoattack", "status": "ok", "adaptive": False,
         "model_key": system.job.key, "eps": 0.1, "robust_accuracy": 0.0,
         "system_accuracy": 0.9},
        {"attack_method": "autoattack", "status": "ok", "adaptive": True,
         "model_key": system.job.key, "eps": 0.2, "robust_accuracy": 0.0,
         "system_accuracy": 0.1}])
    (row,) = ev.flag(plain, [{"eps": 0.1, "status": "ok", "robust_accuracy": 0.5}])
    assert row["masking_flags"].startswith("pgd_close_to_autoattack: PGD 0.500 vs AutoAttack 0.300")
    flagged = ev.flag(system, [
        {"eps": 0.1, "status": "ok", "robust_accuracy": 0.0, "system_accuracy": 0.6},
        {"eps": 0.2, "status": "ok", "robust_accuracy": 0.0, "system_accuracy": 0.4}])
    assert flagged[0]["masking_flags"] == ""  # 0.9 was not adaptive: not compared
    assert flagged[1]["masking_flags"].startswith(
        "pgd_close_to_autoattack: PGD 0.400 vs AutoAttack 0.100")
