"""What ``robustkit attack`` writes besides its rows: a universal perturbation's v (safetensors
+ JSON) and its PNG, and with ``--out-dir`` the per-sample table's companions (model card)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

N_GALLERY = 8


def universal_stem(out: str | None, attack: str, model_name: str, eps: float) -> str:
    """The file stem of a universal perturbation's files: a safe store name whatever the
    --out file is called (``my results.csv`` -> ``my_results-uap-...``)."""
    raw = f"{Path(out).stem + '-' if out else ''}{attack}-{model_name}-eps{eps:g}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip("._-")[:128] or "v"


def save_universal(v: torch.Tensor, eps: float, attack: str, model_name: str,
                    model: torch.nn.Module, data: Any, out: str | None, workdir: str,
                    params: dict[str, Any]) -> tuple[str, str]:
    """Write v (safetensors + JSON) and a PNG of v and a few perturbed inputs."""
    from robustkit.store import check_name, save_tensors

    folder = Path(out).parent if out else Path(workdir)
    stem = check_name(universal_stem(out, attack, model_name, eps))
    v = v.reshape(data.x.shape[1:])
    meta = {"attack": attack, "model": model_name, "eps": eps, "params": params,
            "dataset": data.info.name, "split": data.info.split}
    json_path = save_tensors(folder, stem, {"v": v}, meta=meta)
    png = folder / f"{stem}.png"
    x = data.x[:N_GALLERY]
    x_adv = (x + v).clamp(0, 1)
    dev = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        clean = model(x.to(dev)).argmax(1).cpu()
        adv = model(x_adv.to(dev)).argmax(1).cpu()
    _plot(png, v, x_adv, clean, adv, data.info.classes, f"{attack}, eps={eps:g}")
    return str(json_path), str(png)


def _plot(path: Path, v: torch.Tensor, x_adv: torch.Tensor, clean: torch.Tensor,
          adv: torch.Tensor, classes: tuple[str, ...], title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustkit.store import atomic_write

    image = v.dim() == 3 and v.shape[0] in (1, 3)
    fig, axes = plt.subplots(1, 1 + (len(x_adv) if image else 0),
                             figsize=(1.6 * (1 + len(x_adv)), 2.0), squeeze=False)
    ax = axes[0, 0]
    if image:
        lim = float(v.abs().max()) or 1.0
        ax.imshow(_hwc(v).squeeze(-1) if v.shape[0] == 1 else _hwc(v) / (2 * lim) + 0.5,
                  cmap="RdBu", vmin=-lim, vmax=lim)
        for i, a in enumerate(axes[0, 1:]):
            a.imshow(_hwc(x_adv[i]).squeeze(-1), cmap="gray", vmin=0, vmax=1)
            a.set_title(f"{classes[int(clean[i])]} -> {classes[int(adv[i])]}", fontsize=8,
                        color="red" if clean[i] != adv[i] else "black")
    else:
        ax.bar(range(v.numel()), v.flatten().numpy())
    ax.set_title("v", fontsize=8)
    for a in axes[0]:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _hwc(t: torch.Tensor) -> Any:
    return t.permute(1, 2, 0).numpy()


def write_out_dir(folder: Path, rows: list[dict[str, Any]], model: torch.nn.Module,
                   name: str, dataset: str, spec: Any, params: dict[str, Any],
                   seed: int) -> list[str]:
    """rows.csv and card.json beside samples.parquet (which evaluate wrote)."""
    from robustkit.evaluate import COLUMNS
    from robustkit.evaluate.cards import model_card, write_card

    write_csv(folder / "rows.csv", rows, COLUMNS)
    card = model_card(rows, model, name=name, dataset=dataset,
                      architecture=type(model).__name__, attack=spec.name, params=params,
                      seed=seed, norm=str(params.get("norm", spec.norm)),
                      samples="samples.parquet")
    write_card(folder / "card.json", card)
    return [str(folder / f) for f in ("samples.parquet", "rows.csv", "card.json")]


def write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    import pandas as pd

    from robustkit.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, pd.DataFrame(rows, columns=list(columns)).to_csv(index=False).encode())
