"""A tiny digits spec shared by the sweep tests (fast models, two attacks, two eps)."""
from __future__ import annotations

import pytest
from _specs import FGSM, PGD3, spec_text

TINY = spec_text(
    sweep={"name": "tiny", "eps": [0.0, 0.1], "gallery": 3},
    datasets=[{"name": "digits", "test_limit": 60, "fit_limit": 100}],
    models=[{"family": "linear", "params": {"epochs": 2}},
            {"name": "mlp-16", "family": "mlp", "params": {"hidden": [16], "epochs": 2}}],
    attacks=[FGSM, PGD3])


@pytest.fixture()
def tiny_spec(tmp_path):
    """Write the tiny spec (optionally with extra TOML appended) and return its path."""

    def write(extra: str = "", name: str = "tiny.toml"):
        path = tmp_path / name
        path.write_text(TINY + extra)
        return path

    return write
