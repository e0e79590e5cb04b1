"""MNIST rows of the certificate benchmark (run through certify_networks.py --part mnist-*).

mnist-cnn  an IBP-trained CNN (robustkit's `cnn`: Conv(16, 4x4, s2) - Conv(32, 4x4, s2) -
           FC(100) - FC(10)) at eps 0.1 on the first --n test images: clean accuracy,
           APGD-CE + APGD-T (AutoAttack's "fast" version; the full chain's Square and
           FAB-T were left out for CPU time) robust accuracy, IBP certified accuracy on all
           n, CROWN on the first --crown-n, MILP (CROWN big-M, --time-limit CPU s per
           input) on the inputs neither IBP/CROWN certified nor the attack broke: the
           bracket [certified, attacked] and the share decided exactly, beside Gowal et
           al. 2018's published verified error.
mnist-mlp  a PGD-trained MLP 784-100-100-10 (the shape of Salman et al.'s MLP-B) at eps
           0.1 on the first --n test images: PGD and AutoAttack error, MILP's lower and
           upper bounds of the error, the LP relaxation's certified error with CROWN's
           pre-activation bounds and with LP-tightened ones (LP-ALL), CROWN's and IBP's.

The models come from --model-dir (trained by benchmarks/mnist_models.py: cnn-ibp-0.1,
mlp-pgd-0.1); MNIST from ROBUSTKIT_DATA. Every certificate is checked
against the attack (a certified input it breaks raises CertificateContradiction).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from robustkit import store
from robustkit.attacks.autoattack import autoattack
from robustkit.attacks.pgd import pgd
from robustkit.certify import certify, check_against_attack
from robustkit.data import load_dataset

GOWAL = ("Gowal et al. 2018 (arXiv:1810.12715, abstract): 2.23% verified error at eps 0.1 "
         "(their best single model; its size is not stated in the abstract)")
ZHANG = "Zhang et al. 2020 (CROWN-IBP) MNIST eps 0.1: not read"
SALMAN = ("Salman et al. 2019, Adv(PGD)-MLP-B 784-100-100-10 at eps 0.1: PGD 15.86%, "
          "MILP lower 16.25%, MILP upper 34.37%, LP-ALL 61.59%, LP-GREEDY 71.34%")


def mnist_test(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    te = load_dataset("mnist", "test", root=os.environ.get("ROBUSTKIT_DATA"))
    return te.x[:n], te.y[:n]


def _cpu(fn):
    start = time.process_time()
    out = fn()
    return out, round(time.process_time() - start, 1)


def _checked(r, attacks, model, x, y, idx=slice(None)):
    """Raise on any input ``r`` certified that one of ``attacks`` (name -> AttackResult,
    over all n inputs; ``idx``: the inputs ``r`` covers) broke."""
    for what, a in attacks.items():
        check_against_attack(r, a.success[idx], a.x_adv[idx], model=model, x=x, y=y,
                             what=what)


def cnn_row(model_dir: Path, n: int, crown_n: int, time_limit: float) -> dict:
    model = store.load(model_dir / "cnn-ibp-0.1")[0]
    x, y = mnist_test(n)
    eps = 0.1
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    aa, aa_s = _cpu(lambda: autoattack(model, x, y, eps=eps, version="fast"))
    ibp, ibp_s = _cpu(lambda: certify(model, x, y, eps=eps, method="ibp", attack_steps=0))
    _checked(ibp, {"APGD-CE+T": aa}, model, x, y)
    m = min(crown_n, n)
    crown, crown_s = _cpu(lambda: certify(model, x[:m], y[:m], eps=eps, method="crown",
                                          attack_steps=0, chunk=4))
    _checked(crown, {"APGD-CE+T": aa}, model, x[:m], y[:m], slice(0, m))
    certified = ibp.certified.clone()
    certified[:m] |= crown.certified
    broken = aa.success.clone()
    gap = (~certified & ~broken).nonzero().flatten()
    milp_s, milp_cert, milp_broken, timeouts = 0.0, 0, 0, 0
    if len(gap):
        exact, milp_s = _cpu(lambda: certify(model, x[gap], y[gap], eps=eps, method="milp",
                                             time_limit=time_limit, chunk=4))
        _checked(exact, {"APGD-CE+T": aa}, model, x[gap], y[gap], gap)
        certified[gap] |= exact.certified
        broken[gap] |= exact.broken
        milp_cert, milp_broken = int(exact.certified.sum()), int(exact.broken.sum())
        timeouts = sum("time limit" in r for r in exact.reasons)
    return {
        "model": "cnn ibp (eps_train 0.2)", "eps": eps, "n": n,
        "clean_accuracy": round(clean, 4),
        "attack": "autoattack fast (APGD-CE + APGD-T)",
        "attack_robust": round(1 - float(aa.success.float().mean()), 4),
        "ibp_certified": round(ibp.certified_accuracy, 4), "crown_n": m,
        "crown_certified": round(crown.certified_accuracy, 4),
        "ibp_certified_same_n": round(float(ibp.certified[:m].float().mean()), 4),
        "milp_inputs": len(gap), "milp_certified": milp_cert, "milp_broken": milp_broken,
        "milp_timeouts": timeouts,
        "certified_lower": round(float(certified.float().mean()), 4),
        "robust_upper": round(1 - float(broken.float().mean()), 4),
        "exact_share": round(float((certified | broken).float().mean()), 4),
        "verified_error": round(1 - float(certified.float().mean()), 4),
        "attack_s": aa_s, "ibp_s": ibp_s, "crown_s": crown_s, "milp_s": milp_s,
        "time_limit_s": time_limit, "published": f"{GOWAL}; {ZHANG}",
    }


def mlp_row(model_dir: Path, n: int, time_limit: float) -> dict:
    model = store.load(model_dir / "mlp-pgd-0.1")[0]
    x, y = mnist_test(n)
    eps = 0.1
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    attack, pgd_s = _cpu(lambda: pgd(model, x, y, eps=eps, steps=100, restarts=5, seed=0))
    aa, aa_s = _cpu(lambda: autoattack(model, x, y, eps=eps, version="standard"))
    row = {"model": "mlp 100-100 pgd (eps 0.1)", "eps": eps, "n": n,
           "clean_accuracy": round(clean, 4),
           "pgd_error": round(float(attack.success.float().mean()), 4),
           "autoattack_error": round(float(aa.success.float().mean()), 4),
           "pgd_s": pgd_s, "autoattack_s": aa_s}
    for name, method, kw in [("ibp", "ibp", {}), ("crown", "crown", {}),
                             ("lp", "lp", {"bounds": "crown"}), ("lp_all", "lp", {"bounds": "lp"}),
                             ("milp", "milp", {"bounds": "crown"})]:
        r, s = _cpu(lambda method=method, kw=kw: certify(
            model, x, y, eps=eps, method=method, time_limit=time_limit, **kw))
        _checked(r, {"PGD": attack, "AutoAttack": aa}, model, x, y)
        row[f"{name}_certified_error"] = round(1 - r.certified_accuracy, 4)
        row[f"{name}_s"] = s
        if name in ("lp_all", "milp"):
            row[f"{name}_timeouts"] = sum("time limit" in why for why in r.reasons)
        if name == "milp":
            row["milp_error_lower"] = round(float((r.broken | aa.success).float().mean()), 4)
            row["milp_error_upper"] = row.pop("milp_certified_error")
            row["exact_share"] = round(float((r.certified | r.broken | aa.success)
                                             .float().mean()), 4)
            row["milp_solve_s_max"] = round(float(r.info["solve_seconds"].max()), 2)
    row["time_limit_s"] = time_limit
    row["published"] = SALMAN
    return row
