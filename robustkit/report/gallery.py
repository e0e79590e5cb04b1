"""Image galleries: each model's universal perturbation with the inputs it fools, and
DeepFool's minimal perturbation of the same inputs for every model side by side.

Images are encoded at their native size as PNG data URIs and enlarged by the browser
(``image-rendering: pixelated``), which keeps the page small and the pixels honest.
"""
from __future__ import annotations

import base64
import io
import math
from html import escape

import numpy as np
import pandas as pd

from robustkit.report.artifacts import Artifact, class_names, eps_of
from robustkit.report.data import fmt_num, fmt_pct, model_label, ordered_unique

MAX_EXAMPLES = 6
MAX_DEEPFOOL_INPUTS = 3


def as_image(a: np.ndarray) -> np.ndarray | None:
    """(C,H,W), (H,W) or flat (D,) with D a square (or 3 squares) -> (H,W) or (H,W,3); else None."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        side = math.isqrt(a.size)
        if side * side == a.size and side > 1:
            return a.reshape(side, side)
        side = math.isqrt(a.size // 3)
        return a.reshape(3, side, side).transpose(1, 2, 0) if 3 * side * side == a.size > 3 else None
    if a.ndim == 3 and a.shape[0] == 1:
        return a[0]
    if a.ndim == 3 and a.shape[0] == 3:
        return a.transpose(1, 2, 0)
    return a if a.ndim == 2 else None


def image_uri(a: np.ndarray, *, signed: bool = False) -> str | None:
    """PNG data URI of one input (gray in [0, 1]) or of a perturbation (signed: blue-white-red)."""
    img = as_image(a)
    if img is None:
        return None
    from matplotlib.image import imsave

    buf = io.BytesIO()
    if signed:
        m = float(np.abs(img).max()) or 1.0
        gray = img.mean(axis=2) if img.ndim == 3 else img
        imsave(buf, gray, cmap="RdBu_r", vmin=-m, vmax=m, format="png")
    elif img.ndim == 3:
        imsave(buf, np.clip(img, 0.0, 1.0), format="png")
    else:
        imsave(buf, np.clip(img, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _name(labels: list[str] | None, k: object) -> str:
    k = int(k)  # type: ignore[call-overload]
    return labels[k] if labels is not None and 0 <= k < len(labels) else str(k)


def _figure(uri: str | None, caption: str, *, alt: str, cls: str = "") -> str:
    """A tile: image (or a placeholder when the input is not an image) and its caption (HTML)."""
    img = f'<img src="{uri}" alt="{escape(alt)}">' if uri else '<div class="noimg">no image</div>'
    return f'<figure class="tile {cls}">{img}<figcaption>{caption}</figcaption></figure>'


def _pick_uaps(uaps: list[Artifact], order: list[str]) -> list[Artifact]:
    """One UAP per (dataset, model, defense): ``uap`` before others, then the largest xi."""
    best: dict[tuple, Artifact] = {}
    for art in uaps:
        key = (art.meta["dataset"], model_label(art.meta["model"], art.meta["defense"]))
        if key not in best or _rank(art) > _rank(best[key]):
            best[key] = art
    pos = {m: i for i, m in enumerate(order)}
    return sorted(best.values(), key=lambda a: (a.meta["dataset"], pos.get(a.meta["model"], 1e9)))


def _rank(art: Artifact) -> tuple[bool, float]:
    eps = eps_of(art)
    return art.meta.get("attack") == "uap", -1.0 if math.isnan(eps) else eps


def _csv_fooling(ok: pd.DataFrame | None, art: Artifact) -> float | None:
    """The fooling rate of the artifact's cell in results.csv (all test inputs, not 6)."""
    if ok is None or ok.empty or "fooling_rate" not in ok.columns:
        return None
    m = art.meta
    hit = ok[(ok["dataset"] == m.get("dataset", "")) & (ok["model"] == m.get("model"))
             & (ok["defense"] == m.get("defense", "none")) & (ok["attack"] == m.get("attack"))
             & ((ok["eps"] - eps_of(art)).abs() < 1e-9)]
    value = pd.to_numeric(hit["fooling_rate"], errors="coerce").mean()
    return None if pd.isna(value) else float(value)


def uap_gallery(uaps: list[Artifact], order: list[str], ok: pd.DataFrame | None = None) -> str:
    """One row per model: its universal perturbation v, then inputs + v with their labels.

    The fooling rate shown is the cell's from ``ok`` (results.csv rows) when it is there.
    """
    rows = []
    for art in _pick_uaps(uaps, order):
        v, x = art.get("v"), art.get("x")
        y0, y1 = art.get("y_clean"), art.get("y_adv")
        names = class_names(art)
        linf = float(np.abs(v).max()) if v is not None else float("nan")
        tiles = [_figure(image_uri(v, signed=True) if v is not None else None,
                         f"v &nbsp;&#8214;v&#8214;<sub>&infin;</sub>={fmt_num(linf, 2)}",
                         alt="universal perturbation v", cls="pert")]
        x_adv = art.get("x_adv")
        for i in range(min(MAX_EXAMPLES, 0 if x is None else len(x))):
            xa = x_adv[i] if x_adv is not None else np.clip(x[i] + v.reshape(x[i].shape), 0, 1)
            if y0 is not None and y1 is not None:
                fooled = int(y0[i]) != int(y1[i])
                cap = (f'<span class="lbl">{escape(_name(names, y0[i]))}</span> &rarr; '
                       f'<span class="lbl {"bad" if fooled else "good"}">{escape(_name(names, y1[i]))}</span>')
            else:
                cap = "x + v"
            tiles.append(_figure(image_uri(xa), cap, alt=f"example {i + 1} plus v"))
        fooling = _csv_fooling(ok, art)
        head = (f"<h4>{escape(model_label(art.meta['model'], art.meta['defense']))}</h4>"
                f"<p class='muted'>{escape(art.meta.get('attack', 'uap'))}, &xi; = "
                f"{fmt_num(eps_of(art))}{escape(_dataset(art))}"
                + (f", fooling rate {fmt_pct(fooling)}" if fooling is not None else "") + "</p>")
        rows.append(f'<div class="gallery-row"><div class="row-head">{head}</div>'
                    f'<div class="tiles">{"".join(tiles)}</div></div>')
    return "".join(rows)


def _dataset(art: Artifact) -> str:
    return f", {art.meta['dataset']}" if art.meta.get("dataset") else ""


def deepfool_gallery(arts: list[Artifact], order: list[str]) -> str:
    """Per dataset and input: the input, then each model's minimal adversarial input and r."""
    out = []
    pos = {m: i for i, m in enumerate(order)}
    for dataset in ordered_unique(a.meta["dataset"] for a in arts):
        mine = _one_per_model([a for a in arts if a.meta["dataset"] == dataset], pos)
        x0 = mine[0].get("x")
        n = min(MAX_DEEPFOOL_INPUTS, *(len(a.get("x")) for a in mine))  # type: ignore[arg-type]
        for i in range(n):
            cells = [_deepfool_input(mine[0], i)]
            cells += [_deepfool_cell(a, i) for a in mine]
            same = all(np.allclose(a.get("x")[i], x0[i]) for a in mine)  # type: ignore[index]
            note = "" if same else " <span class='badge warn'>inputs differ between models</span>"
            out.append(f'<div class="df-row"><p class="muted">input {i + 1}'
                       f'{escape(", " + dataset) if dataset else ""}{note}</p>'
                       f'<div class="tiles">{"".join(cells)}</div></div>')
    return "".join(out)


def _one_per_model(arts: list[Artifact], pos: dict[str, int]) -> list[Artifact]:
    """The lowest seed's artifact per (model, defense); undefended first, then spec order."""
    best: dict[tuple[str, str], Artifact] = {}
    for art in sorted(arts, key=lambda a: _seed(a)):
        best.setdefault((art.meta["model"], art.meta["defense"]), art)
    return sorted(best.values(), key=lambda a: (a.meta["defense"] != "none",
                                                 pos.get(a.meta["model"], 1e9), a.meta["defense"]))


def _seed(art: Artifact) -> float:
    try:
        return float(art.meta.get("seed", "0"))
    except ValueError:
        return 0.0


def _deepfool_input(art: Artifact, i: int) -> str:
    y = art.get("y")
    y = art.get("y_clean") if y is None else y
    lab = f"label {escape(_name(class_names(art), y[i]))}" if y is not None else "input"
    return (f'<div class="df-col orig"><h5>original</h5>'
            f'{_figure(image_uri(art.get("x")[i]), lab, alt="original input")}</div>')  # type: ignore[index]


def _deepfool_cell(art: Artifact, i: int) -> str:
    x, r = art.get("x")[i], art.get("delta")[i]  # type: ignore[index]
    r = r.reshape(x.shape)
    y1 = art.get("y_adv")
    l2, x_norm = float(np.linalg.norm(r)), float(np.linalg.norm(x)) or 1.0
    adv = f"&rarr; {escape(_name(class_names(art), y1[i]))}" if y1 is not None else "x + r"
    norm = (f"&#8214;r&#8214;<sub>2</sub>={fmt_num(l2, 2)}<br>"
            f"<span class='muted'>{fmt_pct(l2 / x_norm, 0)} of &#8214;x&#8214;</span>")
    title = escape(model_label(art.meta["model"], art.meta["defense"]))
    return (f'<div class="df-col"><h5>{title}</h5>'
            + _figure(image_uri(np.clip(x + r, 0, 1)), adv, alt="minimal adversarial input")
            + _figure(image_uri(r, signed=True), norm, alt="perturbation r", cls="pert")
            + "</div>")
