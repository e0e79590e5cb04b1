"""Find the sweep's saved tensors (UAPs, DeepFool perturbations, ROC points) under artifacts/.

Artifacts are safetensors files (tensors plus string metadata) or JSON files; the kind
is told by the tensors a file holds, so the report does not depend on file names:
``v`` -> a universal perturbation, ``delta``/``r``/``x_adv`` next to ``x`` -> per-sample
(DeepFool) perturbations, ``fpr`` and ``tpr`` -> a ROC curve. Identifiers (dataset,
model, defense, attack, eps) come from the metadata, else from the path. Nothing is
unpickled; a file that cannot be read becomes a warning, not a failure.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("uap", "deepfool", "roc")
_ALIASES = {
    "x": ("x", "x_examples", "examples", "inputs"),
    "y_clean": ("y_clean", "clean_labels", "pred_clean", "clean_pred", "labels_clean"),
    "y_adv": ("y_adv", "adv_labels", "pred_adv", "adv_pred", "labels_adv"),
    "y": ("y", "labels", "y_true"),
    "delta": ("delta", "r", "perturbation"),
}


@dataclass(frozen=True)
class Artifact:
    """One saved artifact: its kind, identifiers and arrays (numpy, float or int)."""

    kind: str
    meta: dict[str, str]
    arrays: dict[str, np.ndarray]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray | None:
        """The array under ``name`` or one of its aliases (``y_adv`` also finds ``adv_labels``)."""
        for key in _ALIASES.get(name, (name,)):
            if key in self.arrays:
                return self.arrays[key]
        return None


@dataclass(frozen=True)
class Artifacts:
    """All artifacts of a run by kind, plus warnings about files that could not be read."""

    items: list[Artifact]
    warnings: list[str]

    def of(self, kind: str) -> list[Artifact]:
        return [a for a in self.items if a.kind == kind]


def scan(out_dir: str | Path) -> Artifacts:
    """Read every artifact under ``out_dir/artifacts`` (missing folder: no artifacts).

    Example:
        >>> scan("reports/demo").of("uap")  # doctest: +SKIP
    """
    root = Path(out_dir) / "artifacts"
    items: list[Artifact] = []
    warnings: list[str] = []
    if not root.is_dir():
        return Artifacts(items, warnings)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            if path.suffix == ".safetensors":
                art = _read_safetensors(path, root)
            elif path.suffix == ".json":
                art = _read_json(path, root)
            else:
                continue
        except Exception as exc:  # noqa: BLE001 - a broken artifact must not stop the report
            warnings.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
            continue
        if art is not None:
            items.append(art)
    return Artifacts(items, warnings)


def _read_safetensors(path: Path, root: Path) -> Artifact | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = dict(f.metadata() or {})
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    return _classify(arrays, meta, path, root)


def _read_json(path: Path, root: Path) -> Artifact | None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return None
    arrays = {k: np.asarray(v, dtype=float) for k, v in data.items()
              if k in ("fpr", "tpr", "thresholds") and isinstance(v, list)}
    meta = {k: str(v) for k, v in data.items() if not isinstance(v, (list, dict))}
    return _classify(arrays, meta, path, root)


def _classify(arrays: dict[str, np.ndarray], meta: dict[str, str], path: Path,
              root: Path) -> Artifact | None:
    keys = set(arrays)
    if "v" in keys:
        kind = "uap"
    elif {"fpr", "tpr"} <= keys:
        kind = "roc"
    elif keys & {"delta", "r", "perturbation", "x_adv"} and keys & set(_ALIASES["x"]):
        kind = "deepfool"
    else:
        return None
    if kind == "deepfool":  # canonical names, so the gallery can index arrays directly
        x = arrays[_first(keys, _ALIASES["x"])]
        delta = (arrays[_first(keys, _ALIASES["delta"])] if keys & set(_ALIASES["delta"])
                 else arrays["x_adv"] - x)
        arrays = {**arrays, "x": x, "delta": delta}
    return Artifact(kind, _identifiers(meta, path, root, kind), arrays, path)


def _first(keys: set[str], names: tuple[str, ...]) -> str:
    return next(n for n in names if n in keys)


def _identifiers(meta: dict[str, str], path: Path, root: Path, kind: str) -> dict[str, str]:
    """Metadata first; else guess model (file stem) and dataset (a parent folder) from the path."""
    out = dict(meta)
    if "xi" in out and "eps" not in out:
        out["eps"] = out["xi"]
    parts = [p for p in path.relative_to(root).parent.parts if p not in KINDS and p != "deepfool"]
    out.setdefault("model", path.stem.split("__")[0])
    out.setdefault("dataset", parts[0] if parts else "")
    out.setdefault("defense", "none")
    out.setdefault("attack", {"uap": "uap", "deepfool": "deepfool", "roc": ""}[kind])
    return out


def eps_of(art: Artifact) -> float:
    """The artifact's eps/xi as a float (NaN when absent or not a number)."""
    try:
        return float(art.meta.get("eps", "nan"))
    except ValueError:
        return float("nan")


def class_names(art: Artifact) -> list[str] | None:
    """Class names from the ``classes`` metadata (a JSON list), if the sweep saved them."""
    raw = art.meta.get("classes")
    if not raw:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None
