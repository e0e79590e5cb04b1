"""Score a (defended) model: clean and robust accuracy under FGSM, PGD and a UAP over an
eps grid, with the sanity checks that catch gradient masking.

Checks (Carlini et al. 2019, "On evaluating adversarial robustness"; Athalye, Carlini &
Wagner 2018, "Obfuscated gradients give a false sense of security"), each per eps where
it applies; any failure sets ``possible_gradient_masking``:

* ``iterative_not_weaker``: PGD accuracy <= FGSM accuracy + tolerance.
* ``single_step_not_helping``: FGSM accuracy <= clean accuracy + tolerance (an attack
  that makes the model *more* accurate follows a useless gradient: masking or the label
  leaking of single-step adversarial training).
* ``large_eps``: PGD accuracy at eps = 1 (Linf: any input can be reached) <= tolerance.
* ``white_box_beats_noise``: the best white-box accuracy <= accuracy under random
  +-eps sign noise (``robustkit`` attack ``noise``) + tolerance.
* ``pgd_close_to_autoattack`` (when ``autoattack`` runs): PGD accuracy <= AutoAttack
  accuracy + tolerance; otherwise PGD alone overestimates robustness here.
* ``black_box_not_stronger`` (when ``autoattack`` runs): the share of samples that only
  the score-based Square attack broke, after every gradient attack failed on them, is
  <= tolerance (Croce & Hein 2020's sign of gradient masking).

AutoAttack is the headline robust accuracy: ``autoattack`` is among the default attacks,
and its rows carry ``broken_by`` (how many samples each of its attacks broke).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustkit.defenses.detection import SCORE_ATTACKS, detection_scores
from robustkit.defenses.score_checks import CHECKS, WEAK_PGD, SanityCheck, sanity_checks

DEFAULT_ATTACKS = ("autoattack", "fgsm", "pgd", "uap")
WHITE_BOX = ("fgsm", "pgd")


@dataclass(frozen=True)
class ScoreResult:
    """Rows (one per attack and eps, ``evaluate``'s columns plus model/defense/timing
    columns) and the sanity checks."""

    rows: list[dict[str, Any]]
    checks: list[SanityCheck] = field(default_factory=list)

    @property
    def possible_gradient_masking(self) -> bool:
        return any(not c.passed for c in self.checks if c.check != WEAK_PGD)

    def flags(self) -> list[str]:
        """One line per failed check (empty when all pass)."""
        return [f"{'weak attack' if c.check == WEAK_PGD else 'possible gradient masking'}: "
                f"{c.check} at eps={c.eps:g}: {c.detail}" for c in self.checks if not c.passed]

    def table(self) -> str:
        """A plain-text table of the rows followed by the sanity-check summary."""
        cols = ("attack", "eps", "clean_accuracy", "robust_accuracy", "fooling_rate",
                "detection_auc", "seconds")
        lines = ["  ".join(f"{c:>15}" for c in cols)]
        for r in self.rows:
            lines.append("  ".join(f"{_fmt(r.get(c)):>15}" for c in cols))
        first = self.rows[0] if self.rows else {}
        if first.get("train_seconds") is not None:
            lines.append(f"training: {cost_line(first)}")
        lines += [f"autoattack at eps={r['eps']:g}: broken by {r['broken_by'] or 'none'}"
                  for r in self.rows if r.get("broken_by") is not None]
        lines.append(f"sanity checks: {sum(c.passed for c in self.checks)}/{len(self.checks)}"
                     " passed")
        lines += self.flags()
        return "\n".join(lines)


def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
          attacks: Sequence[str] = DEFAULT_ATTACKS, pgd_steps: int = 50,
          pgd_restarts: int = 10, fit_x: torch.Tensor | None = None,
          fit_y: torch.Tensor | None = None, detector: Any = None,
          attack_params: Mapping[str, Mapping[str, Any]] | None = None, checks: bool = True,
          tolerance: float = 0.02, large_eps: float = 1.0, seed: int = 0,
          device: str | torch.device | None = None, batch_size: int = 1024,
          info: Mapping[str, Any] | None = None,
          on_result: Callable[[str, float | None, Any], None] | None = None) -> ScoreResult:
    """Evaluate ``model`` under each attack at each eps and run the sanity checks.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: (N, ...) test inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf budgets (the UAP's radius xi for universal attacks).
        attacks: registered attack names. With ``checks``, ``fgsm``, ``pgd`` and ``noise``
            are run too when missing (the checks need them) and reported.
        pgd_steps, pgd_restarts: PGD strength (default 50 steps, 10 restarts).
        fit_x, fit_y: data universal perturbations are fitted on (held out from x;
            default x, y).
        detector: a ``DefendedSystem`` (model behind a detector/rectifier); its detection
            and system rows come from ``robustkit.defenses.detection.detection_scores``.
        attack_params: per-attack extra parameters, e.g. ``{"uap": {"max_passes": 5}}``.
        checks: run the sanity checks.
        tolerance: slack of every check (absolute accuracy).
        large_eps: the eps of the ``large_eps`` check.
        seed: base seed of every attack.
        device: where attacks run (default the model's device).
        batch_size: samples per attack call.
        info: columns added to every row, e.g. ``model``, ``defense``, ``train_seconds``,
            ``plain_seconds``, ``train_cpu_seconds``, ``plain_cpu_seconds``
            (``time_ratio`` is derived from them, see :func:`training_cost`).
        on_result: called with (attack name, eps, AttackResult) after every attack call
            (eps None for minimal-perturbation attacks), e.g. to report progress.

    Returns:
        ScoreResult with ``rows`` and ``checks``.

    Example:
        >>> from robustkit import load_dataset, models
        >>> m, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=100)
        >>> res = score(m, x, y, eps=[0.1], attacks=("fgsm",), pgd_steps=5, pgd_restarts=1)
        >>> res.possible_gradient_masking
        False

    Reference: Carlini et al., "On evaluating adversarial robustness", arXiv:1902.06705
    (2019); Athalye, Carlini & Wagner, ICML 2018 (arXiv:1802.00420). Passing the checks
    does not prove robustness; failing one says the numbers cannot be trusted.
    """
    from robustkit.evaluate import evaluate

    eps_list = _check_args(eps, attacks, tolerance)
    names = list(dict.fromkeys(attacks))
    if checks:
        names += [a for a in (*WHITE_BOX, "noise") if a not in names]
    extra = {k: dict(v) for k, v in (attack_params or {}).items()}
    extra.setdefault("pgd", {}).update({"steps": pgd_steps, "restarts": pgd_restarts}
                                       | dict((attack_params or {}).get("pgd", {})))
    rows: list[dict[str, Any]] = []
    for name in names:
        fit: dict[str, Any] = {"fit_x": fit_x, "fit_y": fit_y} if _is_universal(name) else {}
        tally = _Breakdown() if name in ("autoattack", "autoattack_l2") else None
        got = evaluate(model, name, x, y, eps=eps_list, seed=seed, device=device,
                       batch_size=batch_size, on_result=_chain(_tagged(on_result, name), tally),
                       **fit, **extra.get(name, {}))
        if tally is not None:
            for r in got:
                r["broken_by"] = tally.text(float(r["eps"]))
                r["square_only"] = tally.square_share(float(r["eps"]), r["n"])
        rows += got
    if detector is not None:
        rows = _merge_detection(rows, model, detector, x, y, eps_list, names, fit_x, fit_y,
                                pgd_steps, seed)
    found: list[SanityCheck] = []
    if checks:
        large = evaluate(model, "pgd", x, y, eps=[large_eps], seed=seed, device=device,
                         batch_size=batch_size, steps=pgd_steps, restarts=1,
                         on_result=_tagged(on_result, "pgd (large eps check)"))[0]
        found = sanity_checks(rows, tolerance=tolerance, large_eps_row=large)
    flag = any(not c.passed for c in found if c.check != WEAK_PGD)
    for r in rows:
        r.update(training_cost(info))
        r["possible_gradient_masking"] = flag
    return ScoreResult(rows, found)


def _tagged(on_result: Callable[[str, float | None, Any], None] | None,
            name: str) -> Callable[[float | None, Any], None] | None:
    return None if on_result is None else functools.partial(on_result, name)


class _Breakdown:
    """Per eps, how many samples each attack of an AutoAttack run broke (summed over the
    batches ``evaluate`` makes)."""

    def __init__(self) -> None:
        self.counts: dict[float, dict[str, int]] = {}

    def __call__(self, eps: float | None, res: Any) -> None:
        if eps is None:
            return
        # broken_by names, per sample, the attack that broke it at this eps or a smaller one
        mine = self.counts.setdefault(float(eps), {})
        for name in res.info.get("broken_by", ()):
            if name:
                mine[name] = mine.get(name, 0) + 1

    def text(self, eps: float) -> str:
        return "; ".join(f"{k}:{v}" for k, v in self.counts.get(eps, {}).items())

    def square_share(self, eps: float, n: Any) -> float | None:
        got = self.counts.get(eps)
        if not got or not n:
            return None
        return sum(v for k, v in got.items() if k.startswith("square")) / float(n)


def _chain(first: Any, second: Any) -> Any:
    hooks = [h for h in (first, second) if h is not None]
    if not hooks:
        return None

    def call(eps: float | None, res: Any) -> None:
        for h in hooks:
            h(eps, res)
    return call


def _merge_detection(rows: list[dict[str, Any]], model: nn.Module, system: Any,
                     x: torch.Tensor, y: torch.Tensor, eps_list: list[float], names: list[str],
                     fit_x: torch.Tensor | None, fit_y: torch.Tensor | None, steps: int,
                     seed: int) -> list[dict[str, Any]]:
    """Add one row per (attack, eps, adaptive) for the model behind its detector/rectifier:
    ``robust_accuracy`` is then the system's accuracy (a rejected adversarial input counts
    as defended), ``clean_accuracy`` the system's on clean inputs (a rejection is an error),
    plus ``detection_auc`` and ``tpr_at_5fpr``."""
    wanted = tuple(a for a in names if a in SCORE_ATTACKS)
    det_rows = detection_scores(model, system, x, y, attacks=wanted, eps=tuple(eps_list),
                                fit_x=fit_x, fit_y=fit_y, steps=steps, seed=seed)
    out = list(rows)
    for d in det_rows:
        name = f"system:{d['attack']}" + ("+adaptive" if d.get("adaptive") else "")
        out.append({"attack": name, "eps": float(d["eps"]), "n": d.get("n"),
                    "clean_accuracy": d.get("clean_system_accuracy"),
                    "robust_accuracy": d.get("system_accuracy"),
                    "classifier_robust_accuracy": d.get("classifier_robust_accuracy"),
                    "detection_auc": d.get("auc"), "tpr_at_5fpr": d.get("tpr_at_5fpr"),
                    "method": d.get("method"), "seconds": d.get("seconds")})
    return out


def training_cost(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``info`` with ``time_ratio`` (defended over plain training) and ``time_ratio_clock``
    (``"cpu"`` or ``"wall"``) added: from the process CPU seconds (``train_cpu_seconds``,
    ``plain_cpu_seconds``) when both are known, else from the wall seconds
    (``train_seconds``, ``plain_seconds``). On a shared machine wall time mostly measures
    the contention; CPU time measures the work (on a GPU it misses the device's share).

    Example:
        >>> training_cost({"train_seconds": 90, "plain_seconds": 10,
        ...                "train_cpu_seconds": 40, "plain_cpu_seconds": 8})["time_ratio"]
        5.0
    """
    cols = dict(info or {})
    for clock, t, p in (("cpu", "train_cpu_seconds", "plain_cpu_seconds"),
                        ("wall", "train_seconds", "plain_seconds")):
        if cols.get(t) is not None and cols.get(p):
            cols["time_ratio"] = float(cols[t]) / float(cols[p])
            cols["time_ratio_clock"] = clock
            break
    return cols


def cost_line(cols: Mapping[str, Any]) -> str:
    """The training time and cost ratio in words, saying which clock the ratio uses:
    ``"12.3 s wall, 10.1 s CPU (2.50x plain training in process CPU time)"``."""
    text = f"{float(cols['train_seconds']):.1f} s wall"
    if cols.get("train_cpu_seconds") is not None:
        text += f", {float(cols['train_cpu_seconds']):.1f} s CPU"
    if cols.get("time_ratio") is not None:
        clock = "process CPU time" if cols.get("time_ratio_clock") == "cpu" else "wall time"
        text += f" ({float(cols['time_ratio']):.2f}x plain training in {clock})"
    return text


def _is_universal(name: str) -> bool:
    from robustkit.attacks import get

    return get(name).kind == "universal"


def _check_args(eps: Sequence[float], attacks: Sequence[str], tolerance: float) -> list[float]:
    from robustkit.attacks import names as attack_names

    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values or any(isinstance(e, bool) or not isinstance(e, (int, float))
                         or not 0 <= e <= 1 for e in values):
        raise ValueError(f"eps must be a non-empty list of numbers in [0, 1], got {eps!r}")
    if isinstance(attacks, str) or not attacks:
        raise ValueError(f"attacks must be a non-empty list of attack names, got {attacks!r}")
    valid = attack_names()
    for a in attacks:
        if a not in valid and not str(a).startswith("foolbox:"):
            raise ValueError(f"unknown attack {a!r}; valid: {', '.join(valid)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    return [float(e) for e in values]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


__all__ = ["CHECKS", "DEFAULT_ATTACKS", "WEAK_PGD", "SanityCheck", "ScoreResult",
           "sanity_checks", "score"]
