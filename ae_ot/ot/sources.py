"""Source measures for semi-discrete OT: the uniform measure on a box ``[low, high]^d``.

Two samplers:

* pseudo-random (``torch.rand``): i.i.d. samples, so cell counts are exactly multinomial and the
  Monte Carlo noise floor of an error estimate is known in closed form. Used for *evaluation*.
* scrambled Sobol (``torch.quasirandom.SobolEngine(scramble=True)``): a randomised quasi-Monte
  Carlo point set, unbiased for every fixed cell and with lower variance than i.i.d. points. Used
  for *training*: every solver step draws a fresh scramble whose seed derives from (seed, step),
  so a step's samples can be re-created after a restart (exact resume) without storing them.

Everything here is pure torch (plus numpy's ``SeedSequence`` for seed mixing).
"""

from __future__ import annotations

import numpy as np
import torch

from ae_ot.checks import UserInputError

__all__ = ["as_box", "derive_seed", "uniform_box", "sobol_box", "normalize_to_box"]

# torch's SobolEngine supports at most this many dimensions.
_SOBOL_MAX_DIM = 21201


def derive_seed(*keys: int) -> int:
    """Mix integer keys into one 63-bit seed (numpy SeedSequence: well mixed, platform independent).

    ``derive_seed(seed, stream, step)`` gives independent-looking streams for every (stream, step).

    Examples
    --------
    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
    True
    """
    ss = np.random.SeedSequence([int(k) % (2**63) for k in keys])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def as_box(low, high, dim: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and broadcast box corners to tensors ``low [d]``, ``high [d]``.

    Parameters
    ----------
    low, high : float or tensor-like of shape [] or [d]
    dim : int
        Dimension d of the box.

    Raises
    ------
    ValueError
        If a corner is not finite, has the wrong shape, or ``low >= high`` in some dimension.

    Examples
    --------
    >>> low, high = as_box(0.0, 1.0, dim=2)
    >>> low.tolist(), high.tolist()
    ([0.0, 0.0], [1.0, 1.0])
    """
    lo = torch.as_tensor(low, dtype=dtype, device=device).detach().clone()
    hi = torch.as_tensor(high, dtype=dtype, device=device).detach().clone()
    if lo.dim() == 0:
        lo = lo.expand(dim).clone()
    if hi.dim() == 0:
        hi = hi.expand(dim).clone()
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise UserInputError(f"low/high must be scalars or tensors of shape [{dim}], got {tuple(lo.shape)} and "
                             f"{tuple(hi.shape)}")
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise UserInputError("low and high must be finite")
    bad = (lo >= hi).nonzero().flatten()
    if bad.numel():
        j = int(bad[0])
        raise UserInputError(f"low must be < high in every dimension; dimension {j} has low={float(lo[j])} >= "
                             f"high={float(hi[j])}")
    return lo, hi


def uniform_box(n: int, low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None = None,
                dtype=None) -> torch.Tensor:
    """``n`` i.i.d. uniform samples on the box: ``low + (high - low) * U``, shape [n, d].

    The samples are drawn on the generator's device (CPU if none) and moved to ``low``'s device, so a
    CPU generator gives the same samples on every device.

    Examples
    --------
    >>> import torch
    >>> uniform_box(4, torch.zeros(2), torch.ones(2), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    dtype = dtype or low.dtype
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, low.shape[0], generator=generator, device=gdev, dtype=dtype).to(low.device)
    return torch.addcmul(low.to(dtype), u, (high - low).to(dtype))


def sobol_box(n: int, low: torch.Tensor, high: torch.Tensor, seed: int, dtype=None) -> torch.Tensor:
    """``n`` points of a freshly scrambled Sobol sequence mapped to the box, shape [n, d].

    Owen-type (linear matrix) scrambling with a digital shift makes each point marginally uniform, so
    cell-mass estimates are unbiased; ``seed`` picks the scramble. Falls back to i.i.d. samples above
    SobolEngine's dimension limit. Powers of two for ``n`` keep the balance properties of the net.

    Examples
    --------
    >>> import torch
    >>> sobol_box(8, torch.zeros(3), torch.ones(3), seed=0).shape
    torch.Size([8, 3])
    """
    dtype = dtype or low.dtype
    d = low.shape[0]
    if d > _SOBOL_MAX_DIM:
        g = torch.Generator().manual_seed(seed)
        return uniform_box(n, low, high, g, dtype)
    eng = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**62))
    u = eng.draw(n, dtype=torch.float32 if dtype != torch.float64 else torch.float64)
    # Sobol points can be exactly 0; harmless for a half-open box, but keep them inside (0, 1).
    u = u.clamp_(1e-7, 1 - 1e-7).to(device=low.device, dtype=dtype)
    return torch.addcmul(low.to(dtype), u, (high - low).to(dtype))


def normalize_to_box(x: torch.Tensor, low: float = 0.0, high: float = 1.0, margin: float = 0.0,
                     per_dim: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affine map of a point cloud into the box [low, high]^d: ``x' = x * scale + shift``.

    Per-dimension min/max scaling (``per_dim=True``) or one isotropic scale (keeps angles, which the
    AE-OT singular-boundary test relies on). ``margin`` leaves a fraction of the box free on every
    side. Returns ``(x' [N, d], scale [d], shift [d])``; invert with ``(x' - shift) / scale``.

    Examples
    --------
    >>> import torch
    >>> x, scale, shift = normalize_to_box(torch.tensor([[0.0, 10.0], [2.0, 20.0]]))
    >>> x.tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    lo, hi = x.min(0).values, x.max(0).values
    span = (hi - lo).clamp_min(1e-12)
    if not per_dim:
        span = span.max().expand_as(span)
    width = (high - low) * (1 - 2 * margin)
    scale = width / span
    centre_src = (lo + hi) / 2
    shift = (low + high) / 2 - centre_src * scale
    return x * scale + shift, scale, shift
