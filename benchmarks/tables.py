"""Regenerate benchmarks/README.md from the CSVs in benchmarks/results/ (never hand-edit it).

    python benchmarks/tables.py           # rewrite benchmarks/README.md
    python benchmarks/tables.py --check   # exit 1 if the committed page is stale

Each table is one ``Table`` in ``TABLES``: the CSV, a title, the command that reproduces it,
the columns to show (CSV column -> header; none: every column but the machine columns), an
optional row filter or custom renderer, and at most one finding worth knowing. A CSV that
does not exist yet is skipped. To add a benchmark, append a ``Table`` (a few lines) and run
this script; tests/test_benchmark_tables.py fails until the page is regenerated. ``Table``
is defined in table_spec.py; the tables of CROWN's cost and of the auto_LiRPA comparison
live in tables_certify.py.
Needs only the standard library, except the defense table (robustkit, for the defaults).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from a path
from table_executors import EXECUTOR_TABLES
from table_lean import lean_table, square_flat
from table_renderers import autoattack_floor, autoattack_pivot, defenses, fgsm_pivot, num
from table_spec import Row, Table
from tables_certify import CERTIFY_TABLES, KERNEL_TABLES

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE / "README.md"
MACHINE_COLUMNS = ("device", "threads", "clock", "commit", "benchmark")

TABLES: list[Table] = [
    Table("train.csv", "Training", "python benchmarks/train.py",
          (("dataset", "dataset"), ("model", "model"), ("params", "params"),
           ("n_train", "n train"), ("test_accuracy", "test accuracy"), ("seconds", "train seconds"),
           ("cpu_seconds", "CPU seconds")),
          note="Digits: seeded 75/25 stratified split. MNIST: a stratified 10,000-image training "
               "subset, the 10,000 test images. One torch thread; `train seconds` is the fit's "
               "wall time, `CPU seconds` the process CPU time of fit and accuracy passes (on a "
               "shared machine the wall time also measures the other jobs)."),
    Table("attacks_fgsm.csv", "FGSM time over one forward + backward pass (the floor)",
          "python benchmarks/attacks.py --only fgsm", render=fgsm_pivot,
          note="Columns after `floor ms`: each method's time divided by the floor (forward and "
               "backward of cross-entropy on the same batch); `floor (model only)` is the part no "
               "FGSM can avoid.",
          finding="robustkit's FGSM costs 1.01-1.10x the floor on every row, and 0.48-0.72x "
                  "foolbox's and 0.34-0.96x ART's time per round; against torchattacks, which "
                  "runs the same forward and backward pass, the difference is within a few "
                  "percent either way."),
    Table("attacks_fgsm.csv", "FGSM, robustkit vs each peer round by round",
          "python benchmarks/attacks.py --only fgsm",
          (("dataset", "dataset"), ("model", "model"), ("method", "peer"),
           ("robustkit_over_this", "median robustkit/peer"), ("ci_low", "95% low"),
           ("ci_high", "95% high"), ("robustkit_faster_share", "rounds robustkit faster")),
          where={"method": "torchattacks|foolbox|art"},
          note="A ratio below 1: robustkit faster; faster for sure when the interval ends below 1."),
    Table("attacks_saturation.csv", "FGSM success where float32 cross-entropy saturates",
          "python benchmarks/attacks_saturation.py",
          note="`p_y_is_1`: inputs whose float32 softmax gives the true class probability 1.",
          finding="Once the true class's probability rounds to 1 in float32, autograd's "
                  "cross-entropy gradient loses its true-class term and FGSM steps along the "
                  "wrong sign; robustkit follows the exact direction. The peers under-report "
                  "FGSM's success on confident models: the MNIST CNN 92.4% vs 99.2%, the GMMs "
                  "7.4% vs 17.9% on digits and 77.1% vs 91.4% on MNIST."),
    Table("attacks_uap.csv", "Universal perturbations, Linf xi = 0.3",
          "python benchmarks/attacks.py --only uap",
          (("dataset", "dataset"), ("model", "model"), ("method", "method"),
           ("seconds", "seconds"), ("passes", "passes"), ("fooling_rate_val", "fooling rate (val)"),
           ("fooling_rate_fit", "fooling rate (fit)"), ("art_seconds_over_these", "ART time / this"),
           ("note", "note")),
          finding="On digits robustkit's mini-batched `uap` fools 84% of the MLP's and CNN's "
                  "validation inputs in under a second; ART's sample-by-sample UAP takes "
                  "1,440-1,490x as long and fools 7% and 21%."),
    Table("attacks_deepfool.csv", "DeepFool L2 (success and median L2 on clean-correct inputs)",
          "python benchmarks/attacks.py --only deepfool",
          (("dataset", "dataset"), ("model", "model"), ("method", "method"), ("n", "n"),
           ("seconds", "seconds"), ("vs_foolbox", "time / foolbox"),
           ("success_rate", "success"), ("l2_median", "median L2"), ("note", "note")),
          finding="robustkit's batched DeepFool is faster than foolbox on every row (0.17-0.94x "
                  "its time) at 100% success with a median L2 no larger than foolbox's."),
    Table("attacks_svm_grad.csv", "RBF-SVM input gradients vs ART's class_gradient",
          "python benchmarks/attacks.py --only svm_grad",
          (("dataset", "dataset"), ("model", "model"), ("method", "method"),
           ("classes", "classes"), ("n_sv", "support vectors"), ("ms_per_sample", "ms / sample"),
           ("speedup", "speed-up vs ART"), ("max_abs_diff_art", "max |diff| vs ART"),
           ("max_abs_diff_fd", "max |diff| vs finite differences"))),
    Table("defenses.csv", "Defenses: plain vs defended model",
          "python benchmarks/defenses.py", render=defenses,
          note="Scored at the training eps (Linf; rows trained at 0.35 are scored at 0.3) by "
               "AutoAttack (the headline), PGD-50 with 10 restarts, FGSM, UAPs recomputed "
               "against each model and noise. MNIST rows with 1,000 test images are scored "
               "on a stratified subset, every column on the same images; \"not run\": no "
               "AutoAttack score for that model. Time = defense training over plain "
               "training seconds.",
          finding="Single-step adversarial training (`fgsm_rs`) can overfit catastrophically: "
                  "PGD accuracy collapses within an epoch. The watch (PGD on a held-out batch "
                  "every epoch) detects it and restores the best epoch; with `recover=2` "
                  "training goes on with a smaller step. AutoAttack is what to cite: on 1,000 "
                  "MNIST test images the ten FGSM-RS CNNs keep 0.785-0.861 under AutoAttack "
                  "while PGD-50x10 reads 2.4-7.6 points higher, and five of them are flagged "
                  "for possible gradient masking (Square breaks images that every gradient "
                  "attack failed on). The five seeds of one setting (eps 0.35, `recover=2`) "
                  "range from 0.785 to 0.861: check a single-step defense on several seeds, or "
                  "use `pgd` (0.887 under AutoAttack, PGD read 0.913). Universal adversarial "
                  "training cuts the fooling rate of a recomputed UAP 70-190x but leaves "
                  "per-input robustness near zero (AutoAttack 0.001-0.015)."),
    Table("defenses_detector.csv", "Detector and rectifier (Akhtar et al. 2018)",
          "python benchmarks/defenses_detector.py",
          (("dataset", "dataset"), ("defense", "defense"), ("attack", "attack"), ("eps", "eps"),
           ("adaptive", "adaptive"), ("auc", "AUC"), ("tpr_at_5fpr", "TPR @ 5% FPR"),
           ("clean_system_accuracy", "clean system acc."), ("system_accuracy", "system acc."),
           ("classifier_robust_accuracy", "classifier acc."), ("n", "n")),
          note="System accuracy counts a rejected adversarial input as defended; classifier "
               "accuracy is the bare classifier under the same perturbation.",
          finding="Both detect non-adaptive UAPs almost perfectly (MNIST AUC 1.000), but an "
                  "attack that knows the defense takes the MNIST system accuracy to 0.006 "
                  "(detector) and 0.138 (prn): report the adaptive numbers."),
    Table("attacks_autoattack.csv", "AutoAttack: robustkit vs PGD vs a reference chain",
          "python benchmarks/attacks_autoattack.py --threads 1", render=autoattack_pivot,
          note="Robust accuracy (Linf) on the same test images. The reference chain is "
               "torchattacks' APGD-CE (100), APGD-T (9 targets x 100), FAB (multi-targeted, "
               "100) and Square (5000), each on the points still robust: AutoAttack's "
               "original strength. Time ratios are robustkit's thread CPU seconds over the "
               "other's, measured in the same process. The curve runs 5 eps up to the "
               "row's eps in one call. ART's AutoAttack runs its defaults (APGD-CE and "
               "APGD-DLR with 5 starts, DeepFool, Square 5 x 5000) on the first n images, "
               "robustkit's on the same ones. \"(no FAB-T)\": measured before FAB existed."),
    Table("attacks_autoattack.csv", "AutoAttack lean version vs standard vs the reference",
          "python benchmarks/attacks_autoattack.py --threads 1 [--dataset unseen]",
          render=lean_table,
          note="Robust accuracy (Linf) of robustkit's lean and standard AutoAttack and the "
               "mean of the reference chain (torchattacks, AutoAttack's original strength) "
               "over its seeds; \"ref. breaks, lean misses\": samples some reference seed "
               "broke and lean left robust. Passes are images through forward / backward "
               "passes per test image (robustkit.attacks.passes), ratios are lean's over the "
               "reference chain's (seed 0); time is thread CPU seconds, on the same code "
               "(same process or not) where the last column says so, else against the "
               "reference row timed on the named earlier code (same machine and clock). "
               "For scale, A3 (Liu et al., CVPR 2022) reports per CIFAR-10 image 4,960 "
               "forward / 1,230 backward passes for AutoAttack and 431 / 212 for A3 on "
               "Gowal2020 WRN-28-10. \"survive\": the reference's robust accuracy (the work "
               "bar applies from 20%). The dataset \"unseen\" holds three models the "
               "benchmark had not used (benchmarks/autoattack_unseen.py). MNIST rows: "
               "1,000 test images at eps 0.3 (--dataset mnist --model-dir DIR --n 1000); "
               "cnn-fgsm_rs is Wong et al.'s FGSM-RS CNN, cnn-pgd-5ep a CNN trained with "
               "PGD (10 steps of 0.04) for 5 epochs (98.54% clean on the 10,000 test "
               "images); cnn-pgd on digits: the CNN trained by the pgd defense at eps 0.1. "
               "Held out (run once, after lean's rules were set): mnist cnn-ibp-0.1 and "
               "mlp-pgd-0.1, the certificate benchmark's IBP-trained CNN and PGD-trained MLP "
               "(benchmarks/mnist_models.py), on 500 test images at eps 0.1 (--model-dir "
               "DIR --eps 0.1 --n 500). "
               "Lean's Square runs on every survivor of its gradient attacks: from its own "
               "start on the far ones, from the chain's best point and twice more from its "
               "own start on the close ones (r <= 0.1), each row's queries following its margin "
               "(robustkit.attacks.square_budget). \"curve floor\": 1 + (robust at the "
               "curve's smallest eps - robust at its largest) / robust at its largest: each "
               "sample the largest eps breaks but a smaller one leaves robust needs a chain "
               "of its own at some smaller eps, as each survivor does at the largest, so "
               "where that chain costs about the same at every eps the curve costs about "
               "this many times its largest eps. No GPU row exists yet: none was available "
               "for these runs."),
    Table("attacks_square_flat.csv", "Square on flat inputs: robustkit vs torchattacks",
          "python benchmarks/attacks_square_flat.py --seeds 10", render=square_flat,
          note="Linf, 5,000 queries, on the correctly classified test samples; torchattacks "
               "gets flat rows as (N, 1, 1, D) images. robustkit's flat window covers "
               "round(sqrt(p * D)) features, as torchattacks' does there; with the earlier "
               "window of p * D features robustkit broke 87.5 per seed (86-89) on the "
               "breast-cancer GMM and 89 by any seed, missing one sample that torchattacks "
               "broke with 11 of 20 seeds (robustkit: 1 of 20)."),
    Table("attacks_autoattack.csv", "AutoAttack time against its floor",
          "python benchmarks/attacks_autoattack.py --threads 1", render=autoattack_floor,
          note="The floor is the time of the model passes a method makes, nothing else: "
               "every method runs on the model wrapped in a counter of the images it passes "
               "forward and backward, and those counts are multiplied by the per-image cost "
               "of one forward (no gradient) and of one forward + backward to the input, timed "
               "on the run's images (up to 1,024) in one batch, in the same process. No "
               "implementation of the same passes at that batch size can be faster; per-image costs "
               "fall with the batch size, and robustkit's batched targets pass up to 8x larger "
               "batches, which is how it can come in under 1x. \"floor AA / floor reference\" "
               "is the ratio of the work the two chains do."),
    Table("sklearn_grad.csv", "Input gradients of a converted scikit-learn SVC vs ART",
          "python benchmarks/sklearn_grad.py",
          (("model", "model"), ("method", "method"), ("gradient", "gradient"), ("n", "n"),
           ("ms_per_sample", "ms / sample"), ("speedup", "robustkit speed-up"),
           ("max_abs_diff_fd", "max |grad - finite diff.|"),
           ("max_abs_diff_art", "max |grad - ART's|")),
          note="The `3 vs 8` rows check correctness, not speed: the input gradient of the "
               "binary decision function against central finite differences and against "
               "ART's on the same inputs (the speed rows leave these columns empty)."),
    *KERNEL_TABLES,
    Table("data_stream.csv", "Peak memory of a streamed evaluation (3x224x224 images)",
          "python benchmarks/data_stream.py",
          (("mode", "mode"), ("n", "images"), ("peak_rss_mb", "peak RSS MB"),
           ("seconds", "seconds"), ("batch_size", "batch"))),
    *CERTIFY_TABLES,
    *EXECUTOR_TABLES,
]


def read(name: str) -> list[Row] | None:
    path = RESULTS / name
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def machine(rows: list[Row]) -> str:
    """Where the rows were measured: device, torch threads and clock, as the CSV says."""
    seen = dict.fromkeys(
        ", ".join(p for p in (r.get("device", ""), f"{r['threads']} thread(s)" if r.get("threads")
                              else "", f"{r['clock']} clock" if r.get("clock") else "") if p)
        for r in rows)
    return "; ".join(s for s in seen if s) or "not recorded"


def markdown(head: list[str], body: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body])


def section(t: Table, rows: list[Row]) -> list[str]:
    for col, allowed in t.where.items():
        rows = [r for r in rows if r.get(col, "") in allowed.split("|")]
    if t.render is not None:
        head, body = t.render(rows)
    else:
        cols = t.columns or tuple((c, c) for c in rows[0] if c not in MACHINE_COLUMNS)
        cols = tuple(c for c in cols if any(r.get(c[0]) for r in rows))  # no empty columns
        head = [h for _, h in cols]
        body = [[num(r.get(c, "")) for c, _ in cols] for r in rows]
    if not body:  # nothing of this table measured yet
        return []
    where = f"`{t.command}` -> `benchmarks/results/{t.csv}`; measured on {machine(rows)}."
    out = [f"## {t.title}", "", where, ""]
    out += ([t.note, ""] if t.note else []) + markdown(head, body) + [""]
    return out + ([f"**Finding.** {t.finding}", ""] if t.finding else [])


def render(tables: list[Table] = TABLES) -> str:
    intro = ("Generated by `python benchmarks/tables.py` from the CSVs in `benchmarks/results/`; "
             "do not edit by hand. `make bench` installs the peer libraries (ART, foolbox, "
             "torchattacks) and reruns the main scripts. The machine is this project's shared "
             "2-core x86-64 CPU (`cpu:x86_64x2`, no GPU): absolute seconds are noisy, the ratios "
             "are measured in one process, timed methods interleaved. Numbers are rounded to "
             "4 significant digits.")
    out = ["# Benchmarks", "", intro, ""]
    toc, body = [], []
    for t in tables:
        rows = read(t.csv)
        if not rows:
            continue
        lines = section(t, rows)
        if not lines:
            continue
        anchor = "".join(c for c in t.title.lower().replace(" ", "-") if c.isalnum() or c == "-")
        toc.append(f"- [{t.title}](#{anchor})")
        body += lines
    return "\n".join(out + toc + [""] + body).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        stale = not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text
        print(f"{PAGE} is {'stale: run python benchmarks/tables.py' if stale else 'up to date'}")
        return int(stale)
    tmp = PAGE.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(PAGE)
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
