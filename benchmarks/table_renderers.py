"""Custom renderers of benchmarks/tables.py: CSV rows -> (header, body) of one table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
Row = dict[str, str]
Rendered = tuple[list[str], list[list[str]]]


def num(v: str, digits: int = 4) -> str:
    """A CSV cell for reading: numbers to ``digits`` significant digits, text as it is."""
    try:
        f = float(v)
    except ValueError:
        return v
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 and "." not in v else f"{f:.{digits}g}"


def fgsm_pivot(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "floor"))
    out: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        line = out.setdefault((r["dataset"], r["model"]),
                              [r["dataset"], r["model"], r["n"], ""] + [""] * len(methods))
        if r["method"] == "floor":
            line[3] = num(str(float(r["seconds"]) * 1e3))
        else:
            line[4 + methods.index(r["method"])] = num(r["ratio"])
    return ["dataset", "model", "n", "floor ms", *methods], list(out.values())


def defenses(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    sys.path.insert(0, str(HERE))
    from defenses_table import table  # the settings columns need the defense defaults

    lines = table(rows)
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return split[0], split[2:]


AA, REF, CURVE, ART = ("robustkit autoattack", "reference chain (torchattacks)",
                       "robustkit autoattack curve (5 eps)", "ART AutoAttack (defaults)")


def autoattack_pivot(rows: list[Row]) -> Rendered:
    """One line per (dataset, model, eps): robust accuracies of robustkit's AutoAttack, the
    reference chain, APGD-CE and PGD, then time ratios (thread CPU seconds, same process)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["eps"]), []).append(r)
    head = ["dataset", "model", "eps", "n", "robustkit AA", "reference AA", "time / reference",
            "APGD-CE", "PGD-50x10 CE / margin", "5-eps curve / this eps",
            "curve / single runs", "curve - single runs", "ART AA (n)",
            "robustkit AA on ART's images", "time / ART"]
    body = []
    for (ds, model, eps), sel in groups.items():
        n = max(int(r["n"]) for r in sel)

        def get(method: str, col: str, size: int = n, sel: list[Row] = sel) -> str:
            return next((r[col] for r in sel if r["method"] == method and int(r["n"]) == size),
                        "")

        def ratio(a: str, b: str) -> str:
            return num(str(float(a) / float(b)), 3) if a and b and float(b) > 0 else ""

        small = min((int(r["n"]) for r in sel if r["method"] == ART), default=0)
        fab = get(AA, "fab")
        aa = num(get(AA, "robust_accuracy")) + (" (no FAB-T)" if fab.startswith("absent") else "")
        pgd = " / ".join(num(get(m, "robust_accuracy")) for m in (
            "robustkit pgd-ce 50x10", "robustkit pgd-margin 50x10"))
        body.append([ds, model, eps, str(n), aa, num(get(REF, "robust_accuracy")),
                     ratio(get(AA, "seconds"), get(REF, "seconds")),
                     num(get("robustkit apgd-ce", "robust_accuracy")), pgd,
                     ratio(get(CURVE, "seconds"), get(AA, "seconds")),
                     *_curve_vs_single(rows, ds, model, n, get(CURVE, "curve"),
                                       get(CURVE, "seconds")),
                     f"{num(get(ART, 'robust_accuracy', small))} ({small})" if small else "",
                     num(get(AA, "robust_accuracy", small)) if small else "",
                     ratio(get(AA, "seconds", small), get(ART, "seconds", small))])
    return head, body


def _curve_vs_single(rows: list[Row], ds: str, model: str, n: int, curve: str,
                     seconds: str) -> list[str]:
    """The curve's time over the summed single-eps AutoAttack runs at the eps both ran
    (of its 5), and the largest (curve - single) robust accuracy there (> 0: the curve
    read higher)."""
    if not curve:
        return ["", ""]
    single = {float(r["eps"]): (float(r["robust_accuracy"]), float(r["seconds"]))
              for r in rows if r["dataset"] == ds and r["model"] == model
              and r["method"] == AA and int(r["n"]) == n}
    both = [(acc, single[float(e)]) for e, acc in json.loads(curve).items()
            if float(e) in single]
    if not both:
        return ["", ""]
    spent = sum(t for _, (_, t) in both)
    k = f" ({len(both)} of {len(json.loads(curve))} eps)"
    return [(num(str(float(seconds) / spent), 3) if spent > 0 else "") + k,
            f"{max(acc - s for acc, (s, _) in both):+.4f}"]


def autoattack_floor(rows: list[Row]) -> Rendered:
    """One line per (dataset, model, eps) whose AutoAttack rows counted their model passes:
    seconds, the passes' own time (the floor) and their ratio, for robustkit's AutoAttack
    and the reference chain, on the same images in the same process."""
    head = ["dataset", "model", "eps", "n", "robustkit AA s", "its floor s", "x floor",
            "reference s", "its floor s", "x floor", "AA / reference",
            "floor AA / floor reference"]
    got: dict[tuple[str, str, str, str], dict[str, Row]] = {}
    for r in rows:
        if r["method"] in (AA, REF) and r.get("floor_seconds"):
            got.setdefault((r["dataset"], r["model"], r["eps"], r["n"]), {})[r["method"]] = r
    body = []
    for (ds, model, eps, n), pair in got.items():
        if len(pair) < 2:
            continue
        ours, ref = pair[AA], pair[REF]
        cells = []
        for r in (ours, ref):
            s, f = float(r["seconds"]), float(r["floor_seconds"])
            cells += [num(r["seconds"]), num(r["floor_seconds"]), num(str(s / f), 3) if f else ""]
        body.append([ds, model, eps, n, *cells,
                     num(str(float(ours["seconds"]) / float(ref["seconds"])), 3),
                     num(str(float(ours["floor_seconds"]) / float(ref["floor_seconds"])), 3)])
    return head, body
