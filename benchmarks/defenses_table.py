"""The README's defense table from benchmarks/results/defenses.csv (one row per trained
model and number of test images: piece, dataset, family, training eps, model and defense
settings, seed; a model rescored on fewer images is a row of its own).

    .venv/bin/python benchmarks/defenses_table.py > benchmarks/results/defenses.md
"""
from __future__ import annotations

import csv
import json
import math
import sys

from common import RESULTS
from defenses_rows import SETTING_DEFAULTS, SETTING_KEYS

from defenses import WONG

WONG_LR = float(WONG["lr"])  # MNIST rows name their lr only when it is not this
KEY = ("piece", "dataset", "model", "train_eps", "model_params", "defense_params", "seed", "n")


def table(rows: list[dict[str, str]]) -> list[str]:
    keys = list(dict.fromkeys(tuple(r[c] for c in KEY) for r in rows))
    head = ("| dataset | model | defense | settings | eps | n test | clean plain -> defended "
            "| AutoAttack robust plain -> defended "
            "| FGSM robust plain -> defended | PGD-50 robust plain -> defended "
            "| UAP fooling plain -> defended | time vs plain |")
    out = [head,
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        sel = [r for r in rows if tuple(r[c] for c in KEY) == k]
        piece, ds, fam, train_eps, mp_s, dp_s, seed, _ = k
        mp, dp = json.loads(mp_s), json.loads(dp_s)

        def get(variant: str, attack: str, col: str, sel: list = sel) -> float:
            return next((float(r[col]) for r in sel
                         if r["variant"] == variant and r["attack"] == attack), math.nan)

        eps = sel[0]["eps"]
        sett = [f"{dp.get('epochs') or mp.get('epochs')} epochs"] \
            if (dp.get("epochs") or mp.get("epochs")) else []
        if mp.get("weight_decay") == 0.0:
            sett.append("wd 0")
        if "lr" in mp and float(mp["lr"]) != WONG_LR:
            sett.append(f"lr {float(mp['lr']):g}")
        if float(train_eps) != float(eps):
            sett.append(f"trained at eps {train_eps}")
        sett += [f"{s} {dp[s]}" for s in SETTING_KEYS
                 if dp.get(s) not in (None, 0, 0.0, SETTING_DEFAULTS.get(s))]
        if seed != "0":
            sett.append(f"seed {seed}")
        restarts = next((r["pgd_restarts"] for r in sel if r["variant"] == "defended"), "")
        uaps = []
        for u in ("uap", "uap_sgd"):
            fp, fd = get("plain", u, "fooling_rate"), get("defended", u, "fooling_rate")
            if not math.isnan(fp):
                uaps.append(f"{u} {fp:.3f} -> {fd:.3f} ({fp / max(fd, 1e-9):.1f}x)")
        masking = "; masking?" if any(r["possible_gradient_masking"] == "True" for r in sel
                                      if r["variant"] == "defended") else ""
        aa_p, aa_d = get("plain", "autoattack", "robust_accuracy"), get(
            "defended", "autoattack", "robust_accuracy")
        aa = "not run" if math.isnan(aa_d) else f"{aa_p:.4f} -> {aa_d:.4f}"
        out.append(
            f"| {ds} | {fam} | {piece} | {', '.join(sett)} | {eps} | {sel[0]['n']} "
            f"| {get('plain', 'fgsm', 'clean_accuracy'):.4f} -> "
            f"{get('defended', 'fgsm', 'clean_accuracy'):.4f} | {aa} "
            f"| {get('plain', 'fgsm', 'robust_accuracy'):.4f} -> "
            f"{get('defended', 'fgsm', 'robust_accuracy'):.4f} "
            f"| {get('plain', 'pgd', 'robust_accuracy'):.4f} -> "
            f"{get('defended', 'pgd', 'robust_accuracy'):.4f} (x{restarts}) "
            f"| {'; '.join(uaps)} | {float(sel[0]['time_ratio']):.1f}x{masking} |")
    return out


def main() -> int:
    with open(RESULTS / "defenses.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
