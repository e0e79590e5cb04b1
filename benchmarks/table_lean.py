"""The AutoAttack lean-version table: robustkit's lean and standard chains against the
reference chain's mean over its seeds, with the work each made (passes and time, same
process), per (dataset, model, eps) of benchmarks/results/attacks_autoattack.csv."""
from __future__ import annotations

import json
import statistics

from table_renderers import Rendered, Row, num

AA, LEAN, REF = ("robustkit autoattack", "robustkit autoattack lean",
                 "reference chain (torchattacks)")
CURVE = "robustkit autoattack lean curve (5 eps)"


def lean_table(rows: list[Row]) -> Rendered:
    """One line per (dataset, model, eps) with a lean row at full n."""
    head = ["dataset", "model", "eps", "n", "lean", "standard", "reference mean (seeds)",
            "lean - ref. mean (points)", "ref. breaks, lean misses", "survive", "lean fwd / img",
            "lean bwd / img", "fwd / ref.", "bwd / ref.", "time / ref.", "time / standard",
            "FAB-T, Square ran for", "5-eps curve / this eps", "curve floor",
            "reference timed on the same code"]
    body = []
    for r in rows:
        if r["method"] != LEAN or not r.get("forward_images"):
            continue
        same = [o for o in rows if (o["dataset"], o["model"], o["eps"], o["n"])
                == (r["dataset"], r["model"], r["eps"], r["n"])]
        refs = [o for o in same if o["method"].startswith(REF)]
        std = next((o for o in same if o["method"] == AA), None)
        ref0 = next((o for o in refs if o["method"] == REF), None)
        if not refs or ref0 is None:
            continue
        n = int(r["n"])
        mean = statistics.mean(float(o["robust_accuracy"]) for o in refs)
        lean = float(r["robust_accuracy"])

        def ratio(a: str | None, b: str | None) -> str:
            return num(str(float(a) / float(b)), 3) if a and b and float(b) > 0 else ""

        curve = next((o for o in rows if o["method"] == CURVE and o["dataset"] == r["dataset"]
                      and o["model"] == r["model"] and o["n"] == r["n"]
                      and max(map(float, json.loads(o["curve"]))) == float(r["eps"])), None)
        body.append([
            r["dataset"], r["model"], r["eps"], str(n), num(r["robust_accuracy"]),
            num(std["robust_accuracy"]) if std else "",
            f"{mean:.4f} ({len(refs)})", f"{100 * (lean - mean):+.2f}",
            r.get("missed_vs_reference", ""), f"{mean:.0%}",
            num(str(int(r["forward_images"]) / n), 4), num(str(int(r["backward_images"]) / n), 4),
            ratio(r["forward_images"], ref0.get("forward_images")),
            ratio(r["backward_images"], ref0.get("backward_images")),
            ratio(r["seconds"], ref0["seconds"]),
            ratio(r["seconds"], std["seconds"] if std else None),
            ", ".join(f"{k}: {v}" for k, v in json.loads(r.get("triggers") or "{}").items()),
            ratio(curve["seconds"], r["seconds"]) if curve else "",
            _floor(json.loads(curve["curve"])) if curve else "",
            "yes" if ref0.get("commit") == r.get("commit") else f"no: code {ref0.get('commit')}"])
    return head, body


def _floor(curve: dict[str, float]) -> str:
    """1 + (robust at the smallest eps - robust at the largest) / robust at the largest: each
    sample the largest eps breaks but a smaller one leaves robust needs a full chain at some
    smaller eps to be shown robust, as each survivor of the largest eps needs one there."""
    ras = [float(v) for _, v in sorted(curve.items(), key=lambda kv: float(kv[0]))]
    return num(str(1 + (ras[0] - ras[-1]) / ras[-1]), 3) if ras[-1] > 0 else "none survive"


def square_flat(rows: list[Row]) -> Rendered:
    """Per task and method: broken samples per seed (mean, min-max), and over all seeds."""
    head = ["task", "eps", "n", "method", "seeds", "broken per seed: mean (min-max)",
            "broken by any seed", "of them by no seed of the other"]
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["eps"], r["n"], r["method"]), []).append(r)
    body = []
    for (task, eps, n, method), sel in groups.items():
        per = [int(r["broken"]) for r in sel if not r["seed"].startswith("any")]
        union = next((r for r in sel if r["seed"].startswith("any")), None)
        body.append([task, eps, n, method, str(len(per)),
                     f"{statistics.mean(per):.1f} ({min(per)}-{max(per)})",
                     union["broken"] if union else "(run stopped)",
                     union["only_this_method"] if union else ""])
    return head, body
