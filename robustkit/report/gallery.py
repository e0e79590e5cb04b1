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
    """PNG data URI of one input (gray in [0, 1]) or of a perturbation (signed: blue-white-red).

    Example:
        >>> image_uri(np.zeros((1, 8, 8)))[:22]
        'data:image/png;base64,'
    """
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


def _name(art: Artifact, k: object) -> str:
    """Class name of label ``k`` (from the artifact's ``classes``), escaped."""
    i, names = int(np.asarray(k)), class_names(art)
    return escape(names[i] if names is not None and 0 <= i < len(names) else str(i))


def _figure(uri: str | None, caption: str, *, alt: str, cls: str = "") -> str:
    """A tile: image (or a placeholder when the input is not an image) and its caption (HTML)."""
    img = f'<img src="{uri}" alt="{escape(alt)}">' if uri else '<div class="noimg">no image</div>'
    return f'<figure class="tile {cls}">{img}<figcaption>{caption}</figcaption></figure>'


def _arrow(art: Artifact, before: object, after: object) -> str:
    changed = int(np.asarray(before)) != int(np.asarray(after))
    return (f'<span class="lbl">{_name(art, before)}</span> &rarr; '
            f'<span class="lbl {"bad" if changed else "good"}">{_name(art, after)}</span>')


def _fooling(ok: pd.DataFrame | None, art: Artifact) -> float | None:
    """Fooling rate of the artifact's cell in results.csv (all test inputs), else of its gallery."""
    m = art.meta
    if ok is not None and not ok.empty and "fooling_rate" in ok.columns:
        hit = ok[(ok["dataset"] == m.get("dataset", "")) & (ok["model"] == m.get("model"))
                 & (ok["defense"] == m.get("defense", "none")) & (ok["attack"] == m.get("attack"))
                 & ((ok["eps"] - eps_of(art)).abs() < 1e-9)]
        value = pd.to_numeric(hit["fooling_rate"], errors="coerce").mean()
        if not pd.isna(value):
            return float(value)
    try:
        return float(m["gallery_fooling_rate"])
    except (KeyError, ValueError):
        return None


def pick_uaps(uaps: list[Artifact], order: list[str], ok: pd.DataFrame | None) -> list[Artifact]:
    """One UAP per (dataset, model + defense), all of one attack and one xi per dataset so
    that rows compare: the (attack, xi) most models have, at the smallest xi where the
    median model is fooled on at least half the inputs (else the largest); lowest seed;
    undefended models first, then spec order."""
    chosen: list[Artifact] = []
    for dataset in ordered_unique(a.meta["dataset"] for a in uaps):
        mine = [a for a in uaps if a.meta["dataset"] == dataset and not math.isnan(eps_of(a))]
        cover: dict[tuple[str, float], set[str]] = {}
        for art in mine:
            cover.setdefault((art.meta.get("attack", "uap"), eps_of(art)), set()).add(_label(art))
        if not cover:
            continue
        most = max(len(v) for v in cover.values())
        attack = next(k[0] for k, v in cover.items() if len(v) == most)
        radii = sorted(e for (a, e), v in cover.items() if a == attack and len(v) == most)

        def at(e: float, attack: str = attack, mine: list[Artifact] = mine) -> list[Artifact]:
            return [a for a in mine if a.meta.get("attack", "uap") == attack and eps_of(a) == e]

        xi = next((e for e in radii
                   if np.median([_fooling(ok, a) or 0.0 for a in at(e)]) >= 0.5), radii[-1])
        per_model: dict[str, Artifact] = {}
        for art in sorted(at(xi), key=_seed):
            per_model.setdefault(_label(art), art)
        chosen += per_model.values()
    pos = {m: i for i, m in enumerate(order)}
    return sorted(chosen, key=lambda a: (a.meta["dataset"], a.meta["defense"] != "none",
                                         pos.get(a.meta["model"], len(pos))))


def _label(art: Artifact) -> str:
    return model_label(art.meta["model"], art.meta["defense"])


def uap_gallery(uaps: list[Artifact], order: list[str], ok: pd.DataFrame | None = None,
                limit: int | None = None) -> str:
    """Per dataset: the clean inputs once, then one row per model with its universal
    perturbation v and the same inputs + v, all rows of one attack and one xi.

    ``limit`` caps the inputs shown (the spec's ``gallery``); None shows all saved.

    Example:
        >>> uap_gallery([], [])
        ''
    """
    picked = pick_uaps(uaps, order, ok)
    out = []
    for dataset in ordered_unique(a.meta["dataset"] for a in picked):
        arts = [a for a in picked if a.meta["dataset"] == dataset]
        first = arts[0]
        xs = [a.get("x") for a in arts]
        n = min([0 if x is None else len(x) for x in xs] + ([limit] if limit is not None else []))
        same = all(x is not None and np.allclose(x[:n], xs[0][:n]) for x in xs)  # type: ignore[index]
        note = "" if same else " <span class='badge warn'>inputs differ between models</span>"
        where = f" on {dataset}" if dataset else ""
        out.append(f"<p class='muted'>{escape(first.meta.get('attack', 'uap') + where)}, "
                   f"every row at &xi; = {fmt_num(eps_of(first))}{note}</p>")
        out.append(_clean_row(first, n))
        out.extend(_uap_row(a, ok, n) for a in arts)
    return "".join(out)


def _clean_row(art: Artifact, n: int) -> str:
    x, y = art.get("x"), art.get("y")
    y = art.get("y_clean") if y is None else y
    blank = ('<figure class="tile pert"><div class="noimg">&nbsp;</div>'
             "<figcaption>&nbsp;</figcaption></figure>")  # under v: keeps the columns aligned
    tiles = [blank]
    for i in range(n):
        lab = f"label {_name(art, y[i])}" if y is not None else "clean"  # type: ignore[index]
        tiles.append(_figure(image_uri(x[i]), lab, alt=f"clean input {i + 1}"))  # type: ignore[index]
    return (f'<div class="gallery-row clean"><div class="row-head"><h4>clean inputs</h4>'
            f"<p class='muted'>without v</p></div><div class=\"tiles\">{''.join(tiles)}</div></div>")


def _uap_row(art: Artifact, ok: pd.DataFrame | None, n: int) -> str:
    v = art.arrays["v"]
    x, x_adv = art.get("x"), art.get("x_adv")
    y0, y1 = art.get("y_clean"), art.get("y_adv")
    tiles = [_figure(image_uri(v, signed=True),
                     f"v &nbsp;&#8214;v&#8214;<sub>&infin;</sub>={fmt_num(np.abs(v).max(), 2)}",
                     alt="universal perturbation v", cls="pert")]
    for i in range(min(n, 0 if x is None else len(x))):
        xa = x_adv[i] if x_adv is not None else np.clip(x[i] + v.reshape(x[i].shape), 0, 1)  # type: ignore[index]
        cap = _arrow(art, y0[i], y1[i]) if y0 is not None and y1 is not None else "x + v"
        tiles.append(_figure(image_uri(xa), cap, alt=f"example {i + 1} plus v"))
    fooling = _fooling(ok, art)
    head = (f"<h4>{escape(_label(art))}</h4>"
            + (f"<p class='muted'>fooling rate {fmt_pct(fooling)}</p>" if fooling is not None
               else ""))
    return (f'<div class="gallery-row"><div class="row-head">{head}</div>'
            f'<div class="tiles">{"".join(tiles)}</div></div>')


def deepfool_gallery(arts: list[Artifact], order: list[str], limit: int | None = None) -> str:
    """Per dataset and input: the input, then each model's minimal adversarial input and r.

    ``limit`` caps the inputs shown (the spec's ``gallery``); None shows all saved.

    Example:
        >>> deepfool_gallery([], [])
        ''
    """
    out = []
    pos = {m: i for i, m in enumerate(order)}
    for dataset in ordered_unique(a.meta["dataset"] for a in arts):
        mine = _one_per_model([a for a in arts if a.meta["dataset"] == dataset], pos)
        x0 = mine[0].arrays["x"]
        cap = [limit] if limit is not None else []
        for i in range(min([*cap, *(len(a.arrays["x"]) for a in mine)])):
            same = all(np.allclose(a.arrays["x"][i], x0[i]) for a in mine)
            note = "" if same else " <span class='badge warn'>inputs differ between models</span>"
            plain = [_deepfool_cell(a, i) for a in mine if a.meta["defense"] == "none"]
            defended = [_deepfool_cell(a, i) for a in mine if a.meta["defense"] != "none"]
            # Defended models on a line of their own: the lecture's comparison stays in view.
            second = (f'<div class="tiles defended"><div class="df-label">defended</div>'
                      f'{"".join(defended)}</div>' if defended else "")
            out.append(f'<div class="df-row"><p class="muted">input {i + 1}'
                       f'{escape(", " + dataset) if dataset else ""}{note}</p>'
                       f'<div class="tiles">{_deepfool_input(mine[0], i)}{"".join(plain)}</div>'
                       f"{second}</div>")
    return "".join(out)


def _one_per_model(arts: list[Artifact], pos: dict[str, int]) -> list[Artifact]:
    """The lowest seed's artifact per (model, defense); undefended first, then spec order."""
    best: dict[tuple[str, str], Artifact] = {}
    for art in sorted(arts, key=_seed):
        best.setdefault((art.meta["model"], art.meta["defense"]), art)
    return sorted(best.values(), key=lambda a: (a.meta["defense"] != "none",
                                                 pos.get(a.meta["model"], len(pos)),
                                                 a.meta["defense"]))


def _seed(art: Artifact) -> float:
    try:
        return float(art.meta.get("seed", "0"))
    except ValueError:
        return 0.0


def _deepfool_input(art: Artifact, i: int) -> str:
    y = art.get("y")
    y = art.get("y_clean") if y is None else y
    lab = f"label {_name(art, y[i])}" if y is not None else "input"
    return (f'<div class="df-col orig"><h5>original</h5>'
            f'{_figure(image_uri(art.arrays["x"][i]), lab, alt="original input")}</div>')


def _deepfool_cell(art: Artifact, i: int) -> str:
    x = art.arrays["x"][i]
    r = art.arrays["delta"][i].reshape(x.shape)
    y, y0, y1 = art.get("y"), art.get("y_clean"), art.get("y_adv")
    l2, x_norm = float(np.linalg.norm(r)), float(np.linalg.norm(x)) or 1.0
    adv = (_arrow(art, y0[i], y1[i]) if y0 is not None and y1 is not None
           else f"&rarr; {_name(art, y1[i])}" if y1 is not None else "x + r")
    norm = (f"&#8214;r&#8214;<sub>2</sub>={fmt_num(l2, 2)}<br>"
            f"<span class='muted'>{fmt_pct(l2 / x_norm, 0)} of &#8214;x&#8214;</span>")
    if y is not None and y0 is not None and int(np.asarray(y0[i])) != int(np.asarray(y[i])):
        # The model errs on x already: DeepFool has nothing to do ("6 -> 6" in green lied).
        adv = (f'<span class="lbl bad">{_name(art, y0[i])}</span> misclassified, '
               "no perturbation needed")
        norm = "<span class='muted'>r = 0</span>"
    title = escape(model_label(art.meta["model"], art.meta["defense"]))
    return (f'<div class="df-col"><h5>{title}</h5>'
            + _figure(image_uri(np.clip(x + r, 0, 1)), adv, alt="minimal adversarial input")
            + _figure(image_uri(r, signed=True), norm, alt="perturbation r", cls="pert")
            + "</div>")
