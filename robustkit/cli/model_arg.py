"""The ``--model NAME`` argument of ``attack`` and ``certify``: a stored model, or a family
name whose default model is trained on the fly (not stored)."""
from __future__ import annotations

import click
import torch

from robustkit import models, store


def model_or_default(name: str, workdir: str, dataset: str | None, data_root: str | None,
                     seed: int, dev: torch.device) -> tuple[torch.nn.Module, str, str | None]:
    """Load stored model ``name`` or train a default one of family ``name``."""
    try:
        folder = store.find_model(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        module, meta = store.load(folder, device=dev)
        return module, f"{name} ({meta.family}, stored in {folder})", meta.dataset
    if name in models.names():
        ds = dataset or "digits"
        click.echo(f"no stored model {name!r} in {workdir}: training a default {name!r} on "
                   f"{ds} (not stored)", err=True)
        module, rec = models.train(name, ds, seed=seed, device=dev, root=data_root)
        label = f"{name} (default, trained now, test accuracy {rec.test_accuracy:.3f})"
        return module.to(dev), label, ds
    raise click.BadParameter(f"{missing}; neither a stored model nor a model family "
                             f"({', '.join(models.names())})", param_hint="--model")
