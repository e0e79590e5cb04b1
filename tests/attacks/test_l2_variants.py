"""The L2 variants built by ``l2_variant``: the base attack with norm="l2" under their own
names, importable where they were, registered like the base, docstrings that name it."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from torch import nn

from robustkit import attacks
from robustkit.attacks.base import ATTACKS
from robustkit.attacks.variants import l2_variant

# L2 name -> (module, base function, quick keyword arguments)
VARIANTS = {"pgd_l2": ("pgd", "pgd", {"eps": 0.5, "steps": 3}),
            "apgd_l2": ("apgd", "apgd", {"eps": 0.5, "steps": 3}),
            "square_l2": ("square", "square", {"eps": 0.5, "queries": 10}),
            "fab_l2": ("fab", "fab", {"steps": 3}),
            "autoattack_l2": ("autoattack", "autoattack",
                              {"eps": 0.5, "version": "fast", "steps": 3})}


def _toy() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x = torch.rand(8, 6)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_is_the_base_attack_with_norm_l2(name):
    module, base_name, kw = VARIANTS[name]
    mod = importlib.import_module(f"robustkit.attacks.{module}")
    fn, base = getattr(mod, name), getattr(mod, base_name)
    model, x, y = _toy()
    res, ref = fn(model, x, y, **kw), base(model, x, y, norm="l2", **kw)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.success, ref.success)
    if "eps" in kw:
        assert float(res.l2.max()) <= kw["eps"] + 1e-5
    assert torch.equal(fn(model, x, y, norm="l2", **kw).x_adv, ref.x_adv)  # norm="l2" is fine
    with pytest.raises(ValueError, match=rf"{name} is the L2 attack.*'{base_name}'"):
        fn(model, x, y, norm="linf", **kw)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_registered_like_the_base_with_its_docs(name):
    module, base_name, _ = VARIANTS[name]
    spec, base = attacks.get(name), attacks.get(base_name)
    assert spec.norm == "l2" and spec.kind == base.kind
    assert spec.fn is getattr(importlib.import_module(f"robustkit.attacks.{module}"), name)
    assert spec.fn.__name__ == name and spec.fn.__module__ == f"robustkit.attacks.{module}"
    assert set(spec.rules) == set(base.rules) - {"norm"}
    assert set(spec.parameters() or []) <= set(base.parameters() or []) - {"norm"}
    assert (spec.curve is None) == (base.curve is None)
    assert spec.check({"norm": "l2"}) and not spec.check({"steps": 3} if "steps" in spec.rules
                                                         else {"queries": 3})
    doc = inspect.getdoc(spec.fn)
    assert doc.startswith(spec.doc) and f"``{base_name}(..., norm=\"l2\")``" in spec.doc
    reference = inspect.getdoc(base.fn).split("Reference:")[1]
    assert "Reference:" + reference in doc and f">>> r = {name}(model, x, y" in doc
    eps = inspect.signature(spec.fn).parameters.get("eps")
    assert (eps is not None) == (base.kind == "fixed")


def test_autoattack_l2_curve_runs_the_l2_chain():
    model, x, y = _toy()
    rows = attacks.get("autoattack_l2").curve(model, x, y, eps=[0.5], version="fast", steps=3)
    from robustkit.attacks.autoattack import autoattack

    assert torch.equal(rows[0].x_adv,
                       autoattack(model, x, y, eps=0.5, norm="l2", version="fast", steps=3).x_adv)


def test_only_registered_attacks_with_a_norm_get_a_variant():
    def stray(model, x, y, *, eps, norm="linf"):
        """Not registered. Reference: none."""

    with pytest.raises(ValueError, match="registered"):
        l2_variant(stray, "stray_l2", title="Stray")
    noise_l2 = attacks.get("noise_l2").fn  # registered, but takes no norm
    with pytest.raises(ValueError, match="norm"):
        l2_variant(noise_l2, "noise_l2_l2", title="Noise")
    assert "stray_l2" not in ATTACKS and "noise_l2_l2" not in ATTACKS
