"""The ``*_l2`` attacks: a registered attack that takes ``norm``, in the L2 ball under its
own registry name (``pgd_l2``, ``apgd_l2``, ``square_l2``, ``fab_l2``, ``autoattack_l2``).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import ATTACKS, AttackResult, AttackSpec, register


def l2_variant(fn: Callable[..., AttackResult], name: str, *, title: str, example: str = "",
               curve: Callable[..., list[AttackResult]] | None = None
               ) -> Callable[..., AttackResult]:
    """Build and register ``name``: the registered attack ``fn`` (which takes ``norm``) in
    the L2 ball, under its own registry name.

    The new function forwards every keyword to ``fn(..., norm="l2")`` and refuses another
    ``norm`` with a ValueError naming both attacks. It is registered with ``fn``'s kind and
    rules (less ``norm``) and ``curve``; its docstring starts with ``title``, names ``fn``,
    repeats ``fn``'s ``Reference:`` paragraph and has an Example (run by doctest) that
    calls it with ``example`` (keyword arguments for a quick run, e.g. ``"steps=5"``; a
    fixed-budget attack gets ``eps=0.5`` too) and compares it with ``fn``. Assign the
    result to ``name`` in ``fn``'s module (it reports that module as its own).
    """
    found = [s for s in map(ATTACKS.get, ATTACKS.names()) if s.fn is fn and "norm" in s.rules]
    if not found:
        raise ValueError(f"fn must be a registered attack taking norm, got {fn!r}")
    base = found[0]

    def variant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params: Any
                ) -> AttackResult:
        norm = params.pop("norm", "l2")
        if norm != "l2":
            raise ValueError(f"{name} is the L2 attack; got norm={norm!r} (use {base.name!r})")
        return fn(model, x, y, norm="l2", **params)

    if base.kind != "minimal":  # eps, the budget, is required (keyword-only) as in fn
        sig = inspect.signature(variant)
        *args, rest = sig.parameters.values()
        eps = inspect.Parameter("eps", inspect.Parameter.KEYWORD_ONLY, annotation=float)
        variant.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*args, eps, rest])
    variant.__name__ = variant.__qualname__ = name
    variant.__module__ = fn.__module__
    variant.__doc__ = _l2_doc(base, name, title, example)
    return register(name, norm="l2", kind=base.kind, curve=curve,
                    rules={k: r for k, r in base.rules.items() if k != "norm"})(variant)


def _l2_doc(base: AttackSpec, name: str, title: str, example: str) -> str:
    """The docstring of :func:`l2_variant`'s function ``name``."""
    fixed = base.kind != "minimal"
    ref = re.search(r"^Reference:.*?(?=\n\s*\n|\Z)", inspect.cleandoc(base.fn.__doc__ or ""),
                    re.MULTILINE | re.DOTALL)
    if ref is None:
        raise ValueError(f"the docstring of {base.name!r} has no 'Reference:' line")
    fn = base.fn.__name__
    args = ", ".join(a for a in ("eps=0.5" if fixed else "", example) if a)
    call = f"(model, x, y{', ' if args else ''}{args}"
    check = ("\n    >>> float(r.l2.max()) <= 0.5 + 1e-5\n    True" if fixed else "")
    budget = "``eps`` (an L2 radius) and " if fixed else ""
    return f"""{title}: ``{fn}(..., norm="l2")`` under its own registry name.

Args:
    model, x, y: as for :func:`{fn}`.
    **params: {budget}the other keyword arguments of :func:`{fn}`.

Returns:
    AttackResult: as ``{fn}(..., norm="l2")`` returns.

Example:
    >>> import torch
    >>> from {base.fn.__module__} import {fn}, {name}
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    >>> r = {name}{call}){check}
    >>> torch.equal(r.x_adv, {fn}{call}, norm="l2").x_adv)
    True

{ref.group(0)}
"""
