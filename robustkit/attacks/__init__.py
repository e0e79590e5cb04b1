"""Attacks: plain functions over (model, x, y) returning frozen results, and a registry.

``get(name)`` returns an ``AttackSpec`` (``.fn`` is the function); ``names()`` lists them.
Names of the form ``foolbox:<AttackName>`` reach any foolbox 3 attack.
"""
from __future__ import annotations

from robustkit.attacks.base import ATTACKS, AttackResult, AttackSpec, project, register


def _load() -> None:
    # Importing the attack modules registers them at their definition sites.
    from robustkit.attacks import (  # noqa: F401
        apgd,
        apgd_targeted,
        autoattack,
        deepfool,
        fab,
        fgsm,
        noise,
        pgd,
        square,
        universal,
    )


def names() -> list[str]:
    """Registered attack names (``foolbox:<Name>`` is accepted too, see ``get``)."""
    _load()
    return ATTACKS.names()


def get(name: str) -> AttackSpec:
    """The registry entry of attack ``name`` (or a foolbox bridge for ``foolbox:<Name>``)."""
    _load()
    if name.startswith("foolbox:"):
        from robustkit.attacks.foolbox_bridge import foolbox_spec

        return foolbox_spec(name.split(":", 1)[1])
    return ATTACKS.get(name)


__all__ = ["AttackResult", "AttackSpec", "get", "names", "project", "register"]
