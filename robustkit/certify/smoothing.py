"""Randomized smoothing (method ``"smoothing"``, L2): it certifies the smoothed classifier
g, never the model f.

``g(x) = argmax_c P(f(x + noise) = c)`` with ``noise ~ N(0, sigma^2 I)``. CERTIFY of
Cohen et al. draws ``n0`` noisy copies to guess the top class c_A, then ``n`` fresh copies
to count it, takes the one-sided Clopper-Pearson lower bound p_A of its probability at
level ``alpha``, and, when p_A > 1/2, certifies that g predicts c_A on the whole L2 ball of
radius ``sigma * Phi^-1(p_A)`` (with probability at least 1 - alpha over the draws);
otherwise it abstains (``unknown``). Noise is not clipped to [0, 1] (as in the paper).

Draws are batched over samples and noise together (``batch`` forward rows at a time, not
one sample at a time as ART's ``RandomizedSmoothing`` does), from a seeded
``torch.Generator``. There is no sequential early stopping: the n draws are always all
taken, so the Clopper-Pearson bound keeps its fixed-sample guarantee.

A sample certified here may still be broken on f by an attack: that is no contradiction,
since the certificate is about g (``info["certifies"]`` says so, and
``check_against_attack`` skips smoothed methods). Nothing is marked ``broken``: the
method never holds a verified witness against f.

Reference: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019 (arXiv:1902.02918).
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.split import frozen_eval

F64 = torch.float64


def _applies(model: nn.Module, norm: str) -> str | None:
    return None if norm == "l2" else f"randomized smoothing certifies L2 balls, not {norm}"


@torch.no_grad()
def class_counts(model: nn.Module, x: torch.Tensor, draws: int, *, sigma: float,
                 batch: int, generator: torch.Generator) -> torch.Tensor:
    """Counts (N, K) of f's predictions over ``draws`` Gaussian copies of each sample.

    The (sample, draw) pairs are enumerated sample-major and run ``batch`` rows at a time,
    so one forward pass covers several samples when draws < batch.
    """
    n = len(x)
    counts: torch.Tensor | None = None
    total = n * draws
    for start in range(0, total, batch):
        rows = torch.arange(start, min(start + batch, total), device=x.device) // draws
        noise = torch.randn((len(rows), *x.shape[1:]), generator=generator,
                            device=x.device, dtype=x.dtype)
        pred = model(x[rows] + sigma * noise).argmax(1)
        if counts is None:
            k = model(x[:1]).shape[1]
            counts = torch.zeros(n, k, dtype=torch.long, device=x.device)
        counts.index_put_((rows, pred), torch.ones_like(pred), accumulate=True)
    if counts is None:
        return torch.zeros(n, 1, dtype=torch.long, device=x.device)
    return counts


def lower_confidence(successes: torch.Tensor, draws: int, alpha: float) -> torch.Tensor:
    """One-sided Clopper-Pearson lower bound (N,) of a binomial proportion at level alpha."""
    from scipy.stats import beta

    s = successes.cpu().numpy()
    low = beta.ppf(alpha, s, draws - s + 1)
    return torch.as_tensor(low, dtype=F64).nan_to_num(0.0)


def radius_of(p_lower: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sigma * Phi^-1(p_lower)`` (N,), NaN where p_lower <= 1/2 (abstain)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=F64),
                                        torch.tensor(1.0, dtype=F64))
    r = sigma * normal.icdf(p_lower.clamp(max=1.0 - 1e-16))
    return torch.where(p_lower > 0.5, r, torch.tensor(float("nan"), dtype=F64))


def _check(sigma: float, n0: int, n: int, alpha: float, batch: int) -> None:
    if not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma={sigma!r} is not valid: expected a number > 0")
    for name, v in (("n0", n0), ("n", n), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} is not valid: expected an integer >= 1")
    if not isinstance(alpha, float) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not valid: expected a float in (0, 1)")


@register("smoothing", applies=_applies, priority=90, smoothed=True)
def smoothing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: tuple[float, ...],
              norm: str, time_limit: float, sigma: float = 0.25, n0: int = 100,
              n: int = 10_000, alpha: float = 0.001, batch: int = 1000, seed: int = 0
              ) -> list[CertifyResult]:
    """Certify the Gaussian-smoothed classifier g of ``model`` in L2 (Cohen et al. 2019).

    Args:
        model: any classifier returning logits (N, K); used in eval mode, not changed.
        x: inputs (N, ...) in [0, 1]; y: int64 (N,) labels.
        eps: L2 radii; norm: must be ``"l2"``.
        time_limit: not used (every draw is taken; see the module docstring).
        sigma: noise standard deviation. n0: selection draws. n: estimation draws.
        alpha: failure probability of each certificate. batch: forward rows at a time.
        seed: seeds the noise.

    Returns:
        One CertifyResult per eps: ``certified`` where g predicts y with radius > eps;
        ``radius`` the certified radius of g (0 where g predicts another class, NaN where it
        abstains); ``info["certifies"]`` names the smoothed classifier.

    Example:
        >>> import torch
        >>> from robustkit import certify
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> r = certify.certify(model, x, y, eps=0.1, norm="l2", method="smoothing", n=200)
        >>> r.info["certifies"]
        'smoothed classifier (sigma=0.25)'
    """
    _check(sigma, n0, n, alpha, batch)
    t0 = time.perf_counter()
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    x = x.detach()
    with frozen_eval(model):
        guess = class_counts(model, x, n0, sigma=sigma, batch=batch, generator=gen).argmax(1)
        counts = class_counts(model, x, n, sigma=sigma, batch=batch, generator=gen)
    hits = counts.gather(1, guess[:, None]).squeeze(1)
    p_lower = lower_confidence(hits, n, alpha)
    radius = radius_of(p_lower, sigma).to(x.device)
    abstain = radius.isnan()
    right = (guess == y) & ~abstain
    radius = torch.where(~abstain & ~right, torch.zeros_like(radius), radius)
    seconds = torch.full((len(x),), (time.perf_counter() - t0) / max(len(x), 1), dtype=F64)
    info: dict[str, Any] = {
        "certifies": f"smoothed classifier (sigma={sigma:g})", "sigma": sigma, "n0": n0,
        "n": n, "alpha": alpha, "prediction": guess.tolist(), "p_lower": p_lower.tolist(),
        "contradiction_check": "not applicable: attacks on the model do not test g"}
    out = []
    for e in eps:
        cert = right & (radius > e)
        reasons = tuple(
            "" if c else "abstained: p_A lower bound <= 1/2" if a
            else f"smoothed prediction {int(g)} != label {int(t)}" if not ok
            else f"certified radius {float(r):.4g} <= eps"
            for c, a, ok, g, t, r in zip(cert.tolist(), abstain.tolist(), right.tolist(),
                                         guess, y, radius))
        out.append(CertifyResult(eps=e, norm=norm, certified=cert,
                                 broken=torch.zeros_like(cert), x_adv=x, radius=radius.clone(),
                                 seconds=seconds, method="smoothing", reasons=reasons,
                                 info=info))
    return out
