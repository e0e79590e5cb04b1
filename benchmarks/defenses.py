"""Defenses against their targets: adversarial training on MNIST (Wong et al.'s small CNN,
Linf eps 0.3), universal adversarial training on digits and MNIST, retraining of the RBF
SVM and the GMM on digits. Every model (plain and defended) is scored with
``robustkit.defenses.score`` (AutoAttack, FGSM, PGD-50 x 10 restarts, UAPs, sanity checks).

Run in pieces (MNIST on a 2-core CPU takes a while):
    .venv/bin/python benchmarks/defenses.py --only fgsm_rs --dataset mnist
    .venv/bin/python benchmarks/defenses.py --dataset digits --quick
    .venv/bin/python benchmarks/defenses.py --only pgd --dataset mnist --attacks autoattack
The last form rescores cached models (runs/bench-defenses/) with the named attacks only.
Rows go to benchmarks/results/defenses.csv (rows of the same piece, dataset and quick flag
are replaced, the others kept), one per (model variant, attack, eps), with the device.

Targets: fgsm_rs and pgd on MNIST >= 98.5% clean and >= 89% PGD-50x10 accuracy at 0.3;
universal: the fooling rate of a UAP recomputed against the defended model drops >= 3x at
<= 1 point clean cost; retrain: FGSM accuracy at the trained eps above the plain model's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, device_name, mnist_root, write_csv
from defenses_rows import SETTING_KEYS, merge

from robustkit import load_dataset, models, store
from robustkit.data import subset
from robustkit.defenses import defend
from robustkit.defenses.score import score

OUT = RESULTS / "defenses.csv"
CACHE = RESULTS.parents[1] / "runs" / "bench-defenses"  # trained models (git-ignored)
# Wong et al. 2020, MNIST: 10 epochs, batch 100, Adam, cyclic lr peaking at 5e-3.
WONG = {"epochs": 10, "batch_size": 100, "lr": 5e-3, "schedule": "cyclic"}
# ... and without weight decay, as in their MNIST code (the cnn's default is 1e-4).
WONG0 = {**WONG, "weight_decay": 0.0}
# The headline attack, scored on every entry before the entry's own attacks.
HEADLINE = ("autoattack",)
# piece -> dataset -> list of (family, model params, eps, defense params, attacks)
PLAN: dict[str, dict[str, list[tuple[str, dict, float, dict, tuple[str, ...]]]]] = {
    "fgsm_rs": {
        # Wong et al.'s setting with the cnn's default weight decay 1e-4; without it (their
        # code) this run overfits catastrophically at epoch 5 (watch PGD accuracy 0.82 ->
        # 0.19, best epoch 4 restored); then 15 epochs, and an eps warm-up over 20%.
        # Entries 1, 2, 4, 5 were trained (--train-only) but not scored: their final watch
        # accuracies (PGD-10 on 256 held-out training images) 0.82, 0.81, 0.85 and 0.73 were
        # below entry 0's 0.895 and entry 3's 0.914; entry 3 was picked on that, not on test.
        # Entry 6 trains at eps 0.35 (alpha 1.25 x 0.35) and is scored at 0.3 like the
        # others: picked by a held-out selection (train on 55,000 images, PGD-40 at 0.3 on
        # the other 5,000), where it reached 0.939 against entry 3's 0.919 (seed 0); 20 and
        # 30 epochs, eps 0.33 and N-FGSM (noise 2, alpha eps, no projection) were worse or
        # overfit catastrophically (see the README). Entry 6 overfits catastrophically in
        # about half the runs (seed 1 here, seed 2 in the selection); entry 7 answers the
        # collapse by restoring the best epoch and halving alpha (recover=2). Alpha 0.35 at
        # train eps 0.35 never collapsed in the selection (seeds 0-2) but reached only
        # 0.918-0.924 there, entry 3's level: not run here.
        # Entry 8 = entry 7 at peak lr 3e-3: in the selection (session 4) lr 5e-3 -> 3e-3
        # removed seed 2's collapse (0.807 -> 0.923 held-out; seed 1 0.940 -> 0.932), lr
        # 2e-3 too but weaker (0.919, 0.910); GradAlign (align 0.5: 0.886, no collapse;
        # align 2: collapsed, 0.739) was not better.
        "mnist": [("cnn", mp, 0.3, {"alpha": 0.375, **dp}, ("fgsm", "pgd", "uap"))
                  for mp, dp in ((WONG, {}), (WONG0, {}), ({**WONG, "epochs": 15}, {}),
                                 (WONG, {"eps_warmup": 0.2}),
                                 ({**WONG, "epochs": 15}, {"eps_warmup": 0.2}),
                                 (WONG, {"eps_warmup": 0.3, "alpha": 0.3}),
                                 (WONG, {"eps_warmup": 0.2, "alpha": 0.4375,
                                         "train_eps": 0.35}),
                                 (WONG, {"eps_warmup": 0.2, "alpha": 0.4375,
                                         "train_eps": 0.35, "recover": 2,
                                         "recover_factor": 0.5}),
                                 ({**WONG, "lr": 3e-3},
                                  {"eps_warmup": 0.2, "alpha": 0.4375, "train_eps": 0.35,
                                   "recover": 2, "recover_factor": 0.5}))],
        "digits": [("cnn", {"epochs": 20}, 0.1, {"lr": 5e-3}, ("fgsm", "pgd", "uap"))],
    },
    "pgd": {
        # Madry et al. train with 40 steps of 0.01; 10 steps of 0.04 (the same 1.33 eps
        # path) keep the run within a 2-core CPU budget. Without the eps warm-up this
        # model stays at chance accuracy at lr 5e-3 (and 1e-3).
        "mnist": [("cnn", WONG, 0.3, {"steps": 10, "step_size": 0.04, "eps_warmup": 0.3},
                   ("fgsm", "pgd", "uap"))],
        "digits": [("cnn", {"epochs": 20}, 0.1, {"steps": 10, "lr": 5e-3},
                    ("fgsm", "pgd", "uap"))],
    },
    # Universal training as in the paper (step eps, plain CE, whole batch perturbed) and
    # as tuned here (clipped CE, half of each batch clean).
    "universal": {
        "mnist": [("cnn", WONG, 0.3, cfg, ("fgsm", "pgd", "uap", "uap_sgd"))
                  for cfg in ({"step": 0.3}, {"step": 0.3, "clip": 3.0, "mix": 0.5})],
        # Digits: the paper's setting at the model's own epochs underfits (CNN: 0.86 train
        # accuracy); with ~3x the epochs (`more`) both settings fit, the tuned one at no
        # clean cost (seeds 0-2 measured, see robustkit/defenses/universal.py).
        "digits": [(fam, mp, 0.2, cfg, ("fgsm", "pgd", "uap", "uap_sgd"))
                   for fam, mp, more in (("mlp", {"hidden": (256,), "epochs": 60}, 180),
                                         ("cnn", {"epochs": 30}, 100))
                   for cfg in ({"step": 0.2}, {"step": 0.2, "epochs": more},
                               {"step": 0.2, "clip": 3.0, "mix": 0.5, "epochs": more})],
    },
    "retrain": {
        "digits": [(fam, params, eps, {"rounds": 4}, ("fgsm", "pgd", "uap"))
                   for fam, params in (("svm", {"kernel": "rbf"}), ("gmm", {}))
                   for eps in (0.1, 0.2, 0.3)],
    },
}


def run_one(piece: str, dataset: str, family: str, mparams: dict, eps: float, dparams: dict,
            attacks: tuple[str, ...], *, root: Path | None, quick: bool, seed: int,
            device: torch.device, train_only: bool = False, score_limit: int | None = None,
            fit_limit: int = 2000) -> list[dict[str, Any]]:
    tr = load_dataset(dataset, "train", root=root, seed=seed)
    te = load_dataset(dataset, "test", root=root, seed=seed)
    if quick and dataset == "mnist":
        tr, te = subset(tr, 10000, seed=seed), subset(te, 1000, seed=seed)
    fit = subset(tr, fit_limit, seed=seed) if len(tr.y) > fit_limit else tr
    if score_limit is not None and score_limit < len(te.y):
        te = subset(te, score_limit, seed=seed)
    steps, restarts = (20, 2) if quick else (50, 10)
    tag = hashlib.sha256(json.dumps([mparams, dparams], sort_keys=True).encode()).hexdigest()
    # eps is the scoring budget; an entry may train at another one ("train_eps")
    dparams = dict(dparams)
    train_eps = float(dparams.pop("train_eps", eps))
    folder = CACHE / (f"{piece}-{dataset}-{family}-{train_eps:g}{'-quick' if quick else ''}"
                      f"-s{seed}-{tag[:8]}")
    plain, res_model, timing, info = _trained(folder, piece, family, mparams, train_eps,
                                              dparams, tr, seed=seed, device=device)
    base = {"piece": piece, "dataset": dataset, "model": family, "defense": piece,
            "train_eps": train_eps, "quick": quick, "seed": seed, "device": device_name(device),
            "threads": torch.get_num_threads(), "n_train": len(tr.y),
            "model_params": json.dumps(mparams), "defense_params": json.dumps(info["params"]),
            "catastrophic_overfitting": info.get("catastrophic_overfitting"), **timing}
    rows: list[dict[str, Any]] = []
    if train_only:
        return rows
    for variant, model in (("plain", plain), ("defended", res_model)):
        print(f"[{piece}/{dataset}/{family}] scoring {variant} ...", flush=True)
        # The plain models fall to ~0 under PGD at these eps: one restart shows it.
        sc = score(model, te.x, te.y, eps=[eps], attacks=attacks, pgd_steps=steps,
                   pgd_restarts=restarts if variant == "defended" else 1, fit_x=fit.x, fit_y=fit.y, seed=seed,
                   device=device, attack_params={"pgd": {"step_size": 0.01}}
                   if dataset == "mnist" else None)
        print(sc.table(), flush=True)
        for r in sc.rows:
            rows.append({**base, "variant": variant, "pgd_steps": steps, "pgd_restarts":
                         restarts if variant == "defended" else 1, **{k: r[k] for k in (
                "attack", "eps", "n", "clean_accuracy", "robust_accuracy", "fooling_rate",
                "seconds")}, "possible_gradient_masking": sc.possible_gradient_masking,
                "flags": "; ".join(sc.flags())})
    return rows


def _trained(folder: Path, piece: str, family: str, mparams: dict, eps: float, dparams: dict,
             tr: Any, *, seed: int, device: torch.device) -> tuple[Any, Any, dict, dict]:
    """Train plain + defended models, or reload them from an earlier run of the same
    settings (training is the expensive part; scoring can be redone)."""
    key = json.loads(json.dumps({"mparams": mparams, "dparams": dparams, "n": len(tr.y)}))
    if (folder / "model.json").is_file():
        meta = store.read_model_meta(folder)
        if meta.extra.get("key") == key:
            print(f"reusing trained models in {folder}", flush=True)
            return (store.load(folder, name="plain")[0], store.load(folder)[0],
                    meta.extra["timing"], meta.extra["info"])
    t0 = time.perf_counter()
    plain = models.create(family, **mparams).fit(tr.x, tr.y, n_classes=tr.info.n_classes,
                                                 seed=seed, device=device)
    plain_s = time.perf_counter() - t0
    res = defend(piece, family, tr.x, tr.y, eps=eps, model_params=mparams, seed=seed,
                 device=device, base=plain, checkpoint=folder / "checkpoint",
                 progress=True, **dparams)
    timing = {"plain_seconds": plain_s, "defense_seconds": res.seconds,
              "time_ratio": res.seconds / plain_s}
    info = {"params": {k: v for k, v in res.params.items() if not torch.is_tensor(v)},
            "catastrophic_overfitting": res.info.get("catastrophic_overfitting"),
            "history": list(res.history)}
    info = json.loads(json.dumps(info, default=str))
    store.save(plain, folder, family=family, params=mparams, name="plain")
    store.save(res.model, folder, family=family, params=mparams,
               extra={"key": key, "timing": timing, "info": info})
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return plain, res.model, timing, info


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run: the numbers the targets are about."""
    lines = []
    cols = ("piece", "dataset", "model", "train_eps", "defense_params", "model_params")
    keys = sorted({tuple(str(r[c]) for c in cols) for r in rows})
    for key in keys:
        piece, ds, fam, eps, dparams, mparams = key
        sel = [r for r in rows if tuple(str(r[c]) for c in cols) == key]

        def get(variant: str, attack: str, col: str, sel: list = sel) -> float:
            return next((float(r[col]) for r in sel if r["variant"] == variant
                         and r["attack"] == attack), math.nan)

        ran = [a for a in ("autoattack", "pgd", "fgsm") if not math.isnan(get("plain", a, "n"))]
        first = ran[0] if ran else "fgsm"
        clean_p, clean_d = get("plain", first, "clean_accuracy"), get(
            "defended", first, "clean_accuracy")
        epochs = json.loads(mparams).get("epochs", "default")
        line = (f"{piece:9} {ds:6} {fam:4} eps={eps:<4} {_short(dparams)},epochs={epochs}: clean "
                f"{clean_p:.4f} -> {clean_d:.4f}")
        for a in ran:
            line += (f", {a} {get('plain', a, 'robust_accuracy'):.4f} -> "
                     f"{get('defended', a, 'robust_accuracy'):.4f}")
        for uap in ("uap", "uap_sgd"):
            fp, fd = get("plain", uap, "fooling_rate"), get("defended", uap, "fooling_rate")
            if not math.isnan(fp):
                line += f", {uap} fooling {fp:.3f} -> {fd:.3f} ({fp / max(fd, 1e-9):.1f}x)"
        line += (f", time {float(sel[0]['defense_seconds']):.0f} s "
                 f"({float(sel[0]['time_ratio']):.2f}x plain)")
        if any(str(r["possible_gradient_masking"]) == "True" for r in sel
               if r["variant"] == "defended"):
            line += " [possible gradient masking]"
        lines.append(line)
    return lines


def _short(dparams: str) -> str:
    """The main defense parameters, for the summary."""
    keep = SETTING_KEYS
    d = json.loads(dparams)
    return ",".join(f"{k}={d[k]}" for k in keep if d.get(k) is not None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(PLAN),
                    help="Piece(s) to run (repeatable) [default: all].")
    ap.add_argument("--dataset", choices=["digits", "mnist", "all"], default="all")
    ap.add_argument("--quick", action="store_true",
                    help="MNIST on 10k/1k images, PGD 20 steps x 2 restarts.")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads.")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--score-limit", type=int, default=None,
                    help="Score on a stratified subset of this many test images.")
    ap.add_argument("--fit-limit", type=int, default=2000,
                    help="Training images the UAPs are fitted on.")
    ap.add_argument("--train-only", action="store_true",
                    help="Train and cache the models (runs/bench-defenses/), no scoring.")
    ap.add_argument("--entry", type=int, action="append",
                    help="Run only these PLAN entries (0-based, repeatable) of each piece; "
                         "their rows replace only the rows of the same entries.")
    ap.add_argument("--attacks", nargs="+", default=None,
                    help="Rescore with these attacks (the checks add fgsm, pgd and noise): "
                         "every row scored replaces only the rows of the same entry, "
                         "variant, attack and number of test images.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = models.resolve_device(args.device)
    root = None
    rows: list[dict[str, Any]] = []
    for piece in args.only or sorted(PLAN):
        for dataset, runs in PLAN[piece].items():
            if args.dataset not in ("all", dataset):
                continue
            if dataset == "mnist":
                root = root or mnist_root()
                if root is None:
                    print("MNIST not found (../shared/datasets/mnist or $ROBUSTKIT_DATA): "
                          f"skipping {piece}/mnist")
                    continue
            for i, (family, mparams, eps, dparams, attacks) in enumerate(runs):
                if args.entry and i not in args.entry:
                    continue
                attacks = tuple(args.attacks) if args.attacks else HEADLINE + attacks
                new = run_one(piece, dataset, family, mparams, eps, dparams, attacks,
                                root=root, quick=args.quick, seed=args.seed, device=device,
                                train_only=args.train_only, score_limit=args.score_limit,
                                fit_limit=args.fit_limit)
                rows += new
                if rows:
                    write_csv(merge(rows, args.out, by_entry=bool(args.entry),
                                    attacks=tuple(args.attacks or ())), args.out)
    print("\n".join(summarize(rows)))


if __name__ == "__main__":
    main()
