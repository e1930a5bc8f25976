"""Conditional flow matching with minibatch OT couplings: velocity field, loss, fixed-step ODE
solvers and a straightness measure. Pure torch + scipy (through :mod:`ae_ot.ot.minibatch`); never
imports Lightning. The Lightning generator that uses it is
:class:`ae_ot.generators.LatentFlowMatching`.

Conditional flow matching (Lipman et al. 2023, "Flow matching for generative modeling")
------------------------------------------------------------------------------------------
Source z0 ~ N(0, I_d), target z1 ~ data (here: normalised autoencoder codes). For a pair (z0, z1)
and t ~ U[0, 1] the straight conditional path and its velocity are

    z_t = (1 - t) z0 + t z1 + sigma * eps,   eps ~ N(0, I_d),       u_t = z1 - z0,

and the velocity field v_theta(t, z) is regressed onto u_t:

    L(theta) = E_{t, (z0, z1), eps} || v_theta(t, z_t) - (z1 - z0) ||^2 / d.

Its minimiser is the marginal velocity E[z1 - z0 | z_t = z]; integrating dz/dt = v(t, z) from
t = 0 to 1 pushes N(0, I) onto the data distribution.

Couplings
---------
Tong et al. 2023, "Improving and generalizing flow-based generative models with minibatch optimal
transport"; Pooladian et al. 2023, "Multisample flow matching".

* ``"independent"`` (I-CFM): z0 and z1 are drawn independently; the conditional paths cross, so
  the marginal velocity bends and an ODE solver needs more steps.
* ``"ot"`` (OT-CFM): a minibatch z0 [B, d] is re-paired with a minibatch z1 [B, d] by the exact
  optimal assignment on the squared Euclidean cost,

      sigma* = argmin_{sigma in S_B} sum_i || z0_i - z1_{sigma(i)} ||^2,

  (:func:`ae_ot.ot.minibatch.assignment`), and the pairs (z0_i, z1_{sigma*(i)}) are used. As the
  batch grows the coupling tends to the W2-optimal plan, whose displacement paths do not cross:
  the learned flow is straighter (fewer ODE steps for the same quality).

Straightness
------------
For a solved path z(t_0 = 0), ..., z(t_K = 1) of n samples [K + 1, n, d], the mean squared
deviation from its chord is

    MSD = 1 / ((K + 1) n) sum_k sum_i || z_i(t_k) - ((1 - t_k) z_i(0) + t_k z_i(1)) ||^2,

zero exactly when every path runs along the segment from z(0) to z(1) at constant speed (the
flow an Euler step of size 1 integrates exactly). OT couplings give smaller values than
independent ones (Tong et al. 2023, Table 2 / Fig. 3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ae_ot.checks import UserInputError
from ae_ot.ot.minibatch import assignment, squared_euclidean_cost

__all__ = [
    "COUPLINGS",
    "SOLVERS",
    "check_coupling",
    "check_solver",
    "check_num_steps",
    "SinusoidalTimeEmbedding",
    "VelocityField",
    "pair_by_minibatch_ot",
    "couple",
    "conditional_flow_matching_loss",
    "integrate",
    "chord_deviation",
]

#: names of the couplings of :func:`couple`
COUPLINGS = ("ot", "independent")
#: names of the fixed-step solvers of :func:`integrate`
SOLVERS = ("euler", "midpoint")


# ---------------------------------------------------------------------------------------------
# Argument checks (the error states the rule and the received value)
# ---------------------------------------------------------------------------------------------
def check_coupling(coupling) -> str:
    """``coupling`` if it is one of :data:`COUPLINGS`, else :class:`UserInputError`.

    Examples
    --------
    >>> check_coupling("ot")
    'ot'
    """
    if coupling not in COUPLINGS:
        raise UserInputError(f"coupling must be one of {', '.join(map(repr, COUPLINGS))} "
                             f"(exact minibatch OT pairing, or independent pairs), got {coupling!r}")
    return coupling


def check_solver(solver) -> str:
    """``solver`` if it is one of :data:`SOLVERS`, else :class:`UserInputError`.

    Examples
    --------
    >>> check_solver("euler")
    'euler'
    """
    if solver not in SOLVERS:
        raise UserInputError(f"solver must be one of {', '.join(map(repr, SOLVERS))} (fixed-step ODE solvers), "
                             f"got {solver!r}")
    return solver


def check_num_steps(num_steps) -> int:
    """``num_steps`` if it is an integer >= 1, else :class:`UserInputError`.

    Examples
    --------
    >>> check_num_steps(20)
    20
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise UserInputError(f"num_steps must be an integer >= 1 (fixed ODE steps from t=0 to t=1), got {num_steps!r}")
    return num_steps


# ---------------------------------------------------------------------------------------------
# The velocity field
# ---------------------------------------------------------------------------------------------
class SinusoidalTimeEmbedding(nn.Module):
    """t [B] in [0, 1] -> [B, dim]: (t, sin(2 pi f_k t), cos(2 pi f_k t)) for ``(dim - 1) // 2``
    frequencies f_k spaced geometrically from 1/2 to ``max_frequency`` (padded with zeros to ``dim``).

    Examples
    --------
    >>> import torch
    >>> SinusoidalTimeEmbedding(dim=9)(torch.tensor([0.0, 0.5])).shape
    torch.Size([2, 9])
    """

    def __init__(self, dim: int = 32, max_frequency: float = 32.0):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 3:
            raise UserInputError(f"time embedding dim must be an integer >= 3 (t plus one sine/cosine pair), got {dim!r}")
        self.dim = dim
        count = (dim - 1) // 2
        frequencies = torch.logspace(math.log10(0.5), math.log10(max_frequency), count)
        self.register_buffer("angular_frequencies", 2 * math.pi * frequencies, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.angular_frequencies[None, :]
        parts = [t[:, None], angles.sin(), angles.cos()]
        pad = self.dim - 1 - 2 * self.angular_frequencies.shape[0]
        if pad:
            parts.append(t.new_zeros(t.shape[0], pad))
        return torch.cat(parts, 1)


class VelocityField(nn.Module):
    """v_theta(t, z): an MLP on [z, embed(t)] -> R^d.

    ``num_layers`` hidden layers of ``hidden_dim`` units with SiLU, a linear output layer.

    Parameters
    ----------
    dim : int
        Dimension d of z.
    hidden_dim : int, default 256
    num_layers : int, default 3
    time_embedding_dim : int, default 32

    Shapes: ``forward(t, z)`` with t a float, a 0-d tensor or [B], and z [B, d] -> [B, d].

    Examples
    --------
    >>> import torch
    >>> VelocityField(dim=2, hidden_dim=16)(torch.rand(4), torch.randn(4, 2)).shape
    torch.Size([4, 2])
    """

    def __init__(self, dim: int, hidden_dim: int = 256, num_layers: int = 3, time_embedding_dim: int = 32):
        super().__init__()
        for name, value in (("dim", dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be a positive integer, got {value!r}")
        self.dim = dim
        self.time_embedding = SinusoidalTimeEmbedding(time_embedding_dim)
        layers: list[nn.Module] = []
        width = dim + time_embedding_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.SiLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t, z: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        return self.net(torch.cat([z, self.time_embedding(t)], 1))


# ---------------------------------------------------------------------------------------------
# Couplings and the loss
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def pair_by_minibatch_ot(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """``z1`` [B, d] re-ordered so that (z0_i, z1_out_i) is the exact optimal assignment between
    the two equal-size minibatches for the squared Euclidean cost (Tong et al. 2023; Pooladian
    et al. 2023). Returns [B, d].

    Examples
    --------
    >>> import torch
    >>> pair_by_minibatch_ot(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.1], [0.1]])).tolist()
    [[0.10000000149011612], [1.100000023841858]]
    """
    rows, cols = assignment(squared_euclidean_cost(z0, z1))
    order = torch.empty_like(cols)
    order[rows] = cols
    return z1[order]


def couple(z0: torch.Tensor, z1: torch.Tensor, coupling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (z0, z1') [B, d] each: ``"ot"`` re-pairs by :func:`pair_by_minibatch_ot`,
    ``"independent"`` keeps the independent draws as they are.

    Examples
    --------
    >>> import torch
    >>> z0, z1 = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.1], [0.1]])
    >>> couple(z0, z1, "ot")[1].tolist()
    [[0.10000000149011612], [1.100000023841858]]
    """
    check_coupling(coupling)
    if z0.shape != z1.shape:
        raise UserInputError(f"z0 and z1 must have the same shape [B, d], got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if coupling == "ot":
        return z0, pair_by_minibatch_ot(z0, z1)
    return z0, z1


def conditional_flow_matching_loss(velocity: nn.Module, z1: torch.Tensor, coupling: str = "ot",
                                   sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The CFM loss (module docstring) of one minibatch of data ``z1`` [B, d].

    Draws z0 ~ N(0, I) [B, d] and t ~ U[0, 1] [B] (from ``generator`` on z1's device, or the global
    RNG), pairs (z0, z1) by ``coupling``, and returns
    mean_i || v(t_i, z_t,i) - (z1_i - z0_i) ||^2 / d, a 0-d tensor.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> loss = conditional_flow_matching_loss(VelocityField(dim=2, hidden_dim=16), torch.randn(8, 2, generator=g), generator=g)
    >>> loss.dim(), bool(loss > 0)
    (0, True)
    """
    if z1.dim() != 2 or z1.shape[0] == 0:
        raise UserInputError(f"z1 must be a non-empty batch of codes [B, d], got shape {tuple(z1.shape)}")
    if sigma < 0:
        raise UserInputError(f"sigma must be >= 0 (std of the noise around the straight paths), got {sigma!r}")
    z0 = torch.randn(z1.shape, generator=generator, device=z1.device, dtype=z1.dtype)
    z0, z1 = couple(z0, z1, coupling)
    t = torch.rand(z1.shape[0], generator=generator, device=z1.device, dtype=z1.dtype)
    z_t = (1 - t[:, None]) * z0 + t[:, None] * z1
    if sigma > 0:
        z_t = z_t + sigma * torch.randn(z1.shape, generator=generator, device=z1.device, dtype=z1.dtype)
    return (velocity(t, z_t) - (z1 - z0)).pow(2).mean()


# ---------------------------------------------------------------------------------------------
# Fixed-step ODE solvers
# ---------------------------------------------------------------------------------------------
def integrate(velocity, z0: torch.Tensor, num_steps: int = 20, solver: str = "midpoint",
              return_path: bool = False) -> torch.Tensor:
    """Integrate dz/dt = velocity(t, z) from t = 0 to 1 with ``num_steps`` fixed steps h = 1/K.

    Euler:    z_{k+1} = z_k + h v(t_k, z_k)
    midpoint: z_{k+1} = z_k + h v(t_k + h/2, z_k + (h/2) v(t_k, z_k))   (2 evaluations per step)

    ``z0`` [n, d] -> z(1) [n, d], or with ``return_path`` the whole path [K + 1, n, d] at
    t_k = k / K. Runs under ``torch.no_grad``.

    Examples
    --------
    >>> import torch
    >>> class Constant(torch.nn.Module):
    ...     def forward(self, t, z):
    ...         return torch.ones_like(z)
    >>> integrate(Constant(), torch.zeros(2, 1), num_steps=4).tolist()
    [[1.0], [1.0]]
    """
    check_num_steps(num_steps)
    check_solver(solver)
    h = 1.0 / num_steps
    z = z0
    path = [z0] if return_path else None
    with torch.no_grad():
        for k in range(num_steps):
            t = k * h
            if solver == "euler":
                z = z + h * velocity(t, z)
            else:
                z_half = z + (0.5 * h) * velocity(t, z)
                z = z + h * velocity(t + 0.5 * h, z_half)
            if return_path:
                path.append(z)
    return torch.stack(path) if return_path else z


def chord_deviation(path: torch.Tensor) -> float:
    """Mean squared deviation of ODE paths from their chords (module docstring).

    ``path`` [K + 1, n, d] sampled at the equally spaced times t_k = k / K (as :func:`integrate`
    returns it). Returns MSD = mean_{k, i} || z_i(t_k) - ((1 - t_k) z_i(0) + t_k z_i(1)) ||^2.

    Examples
    --------
    >>> import torch
    >>> line = torch.linspace(0, 1, 5)[:, None, None] * torch.ones(5, 3, 2)   # straight paths [K+1, B, d]
    >>> chord_deviation(line)
    0.0
    """
    if path.dim() != 3 or path.shape[0] < 2:
        raise UserInputError(f"path must be [K + 1, n, d] with K >= 1 steps, got shape {tuple(path.shape)}")
    t = torch.linspace(0, 1, path.shape[0], dtype=path.dtype, device=path.device)[:, None, None]
    chord = (1 - t) * path[0] + t * path[-1]
    return (path - chord).pow(2).sum(-1).mean().item()
