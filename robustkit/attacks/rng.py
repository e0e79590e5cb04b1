"""Per-sample random numbers: every draw a function of (seed, stream, sample id, draw count).

An attack that draws from one ``torch.Generator`` for its whole batch gives a sample other
random starts when it lands in another batch, another shard or another position, so that
an evaluation split over workers (or batched differently) would not reproduce one run.
:class:`SampleRNG` instead hashes, per element, the seed, a stream name (the attack), the
sample's id (its index in the evaluated data set), how many draws that sample has taken so
far in this call, and the element's position within the sample: the numbers a sample gets
depend on nothing else. The hash is splitmix64 (Steele, Lea & Flood, OOPSLA 2014) in int64
tensor arithmetic, which wraps like the uint64 original, so it runs on any device.

Example:
    >>> import torch
    >>> a = SampleRNG(0, torch.arange(4), "cpu").rand((4, 3))
    >>> b = SampleRNG(0, torch.tensor([2, 3]), "cpu").rand((2, 3))
    >>> torch.equal(a[2:], b)
    True
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


GOLDEN = _signed(0x9E3779B97F4A7C15)
C1, C2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (``>>`` on int64 is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 (wrapping multiplication, as uint64)."""
    z = (z ^ _srl(z, 30)) * C1
    z = (z ^ _srl(z, 27)) * C2
    return z ^ _srl(z, 31)


def stream_key(name: str) -> int:
    """A stable integer for a stream name (CRC-32: the same in every process and run)."""
    return zlib.crc32(name.encode())


class SampleRNG:
    """Random numbers per sample for the rows of one attack call.

    Row i of every draw belongs to sample ``ids[i]``; a draw's first dimension is the rows.
    Each sample counts its own draws, so a sample's numbers are the same whatever other
    samples share its batch, in any order. :meth:`take` narrows to some rows (a restart on
    the samples left, pairs of a sample and a target) sharing the counts.

    Args:
        seed: the evaluation's seed (an int).
        ids: int64 (N,) sample ids, e.g. their indices in the data set.
        device: where the numbers are made.
        stream: a name separating attacks that draw for the same samples.
    """

    def __init__(self, seed: int, ids: torch.Tensor, device: torch.device | str,
                 stream: str = "") -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        device = torch.device(device)
        self.ids = ids.to(device=device, dtype=torch.long)
        self.rows = torch.arange(len(ids), device=device)
        self.sub = torch.zeros(len(ids), dtype=torch.long, device=device)
        self.counts = torch.zeros(len(ids), dtype=torch.long, device=device)
        self.key = mix(torch.tensor(seed, dtype=torch.long) * GOLDEN + stream_key(stream))
        self.key = self.key.to(device)
        self.base = mix(self.key + self.ids * GOLDEN)  # per row: the sample's own key

    def take(self, rows: torch.Tensor, sub: torch.Tensor | None = None) -> SampleRNG:
        """The generator of rows ``rows`` (indices, repeats allowed, or a bool mask) of this
        one; ``sub`` (int64 per row) tells repeated rows of one sample apart (a target rank)."""
        if rows.dtype == torch.bool:
            rows = rows.nonzero().squeeze(1)
        out = SampleRNG.__new__(SampleRNG)
        out.ids, out.rows, out.counts, out.key = (self.ids[rows], self.rows[rows], self.counts,
                                                  self.key)
        out.base = self.base[rows]
        out.sub = self.sub[rows] if sub is None else self.sub[rows] * 1024 + sub.long()
        return out

    def bits(self, shape: Sequence[int]) -> torch.Tensor:
        """int64 hashes of ``shape`` (rows first); then each row's sample counts one draw."""
        n = shape[0] if len(shape) else 0
        if n != len(self.ids):
            raise ValueError(f"a draw of shape {tuple(shape)} for {len(self.ids)} rows: the "
                             f"first dimension must be the rows")
        per = math.prod(shape[1:])
        row = mix(self.base + self.counts[self.rows] * C1 + self.sub * C2)
        self.counts[self.rows] = self.counts[self.rows] + 1
        pos = torch.arange(per, device=row.device, dtype=torch.long) * GOLDEN
        return mix(row[:, None] + pos[None, :]).reshape(tuple(shape))

    def rand(self, shape: Sequence[int], *, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        """Uniform in [0, 1) (``torch.rand``'s contract; ``device`` is the generator's)."""
        dtype = dtype or torch.get_default_dtype()
        if dtype == torch.float64:
            return _srl(self.bits(shape), 11).to(dtype) * 2.0 ** -53
        return (_srl(self.bits(shape), 40).to(torch.float32) * 2.0 ** -24).to(dtype)

    def randn(self, shape: Sequence[int], *, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal (Box-Muller on the two halves of each hash)."""
        h = self.bits(shape)
        u1 = (_srl(h, 40) + 1).double() * 2.0 ** -24  # (0, 1]: log stays finite
        u2 = (h & ((1 << 24) - 1)).double() * 2.0 ** -24
        z = (-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)
        return z.to(dtype or torch.get_default_dtype())

    def randint(self, low: int, high: int, shape: Sequence[int], *,
                device: torch.device | str | None = None) -> torch.Tensor:
        """Integers in [low, high) (int64)."""
        if high <= low:
            raise ValueError(f"randint needs high > low, got low={low}, high={high}")
        return _srl(self.bits(shape), 1) % (high - low) + low


def sample_rng(seed: int, x: torch.Tensor, sample_ids: torch.Tensor | None,
               stream: str) -> SampleRNG:
    """The :class:`SampleRNG` of an attack call on ``x``: ``sample_ids`` (int64 (N,), the
    samples' indices in the evaluated data) or, by default, ``arange(N)``."""
    if sample_ids is None:
        sample_ids = torch.arange(len(x), device=x.device)
    elif not torch.is_tensor(sample_ids) or sample_ids.shape != (len(x),) \
            or sample_ids.is_floating_point():
        raise ValueError(f"sample_ids must be an integer tensor of shape ({len(x)},), got "
                         f"{getattr(sample_ids, 'shape', type(sample_ids).__name__)}")
    return SampleRNG(seed, sample_ids, x.device, stream)



def rand(gen: SampleRNG | torch.Generator, shape: Sequence[int], *,
         device: torch.device | str | None = None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.rand`` from a :class:`SampleRNG` or a ``torch.Generator``."""
    if isinstance(gen, SampleRNG):
        return gen.rand(shape, dtype=dtype)
    return torch.rand(tuple(shape), generator=gen, device=device, dtype=dtype)


def randn(gen: SampleRNG | torch.Generator, shape: Sequence[int], *,
          device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.randn`` from a :class:`SampleRNG` or a ``torch.Generator``."""
    if isinstance(gen, SampleRNG):
        return gen.randn(shape, dtype=dtype)
    return torch.randn(tuple(shape), generator=gen, device=device, dtype=dtype)


def randint(gen: SampleRNG | torch.Generator, low: int, high: int, shape: Sequence[int], *,
            device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.randint`` from a :class:`SampleRNG` or a ``torch.Generator``."""
    if isinstance(gen, SampleRNG):
        return gen.randint(low, high, shape)
    return torch.randint(low, high, tuple(shape), generator=gen, device=device)
