"""ae_ot.ot: optimal transport library (pure torch; never imports Lightning).

Semi-discrete OT from the uniform measure on a box to a weighted point cloud:
:class:`SemiDiscreteOT` (fit, assign, transport, topk, cell_measures, errors, save/load).
Kernels (tiled top-k of <x, y_i> + h_i, torch / KeOps, sharded over torch.distributed) live in
:mod:`ae_ot.ot.kernels`, box samplers in :mod:`ae_ot.ot.sources`.
"""

from ae_ot.ot.semidiscrete import FitReport, SemiDiscreteOT, noise_floor, normalize_to_box, power_cells_2d

__all__ = ["SemiDiscreteOT", "FitReport", "noise_floor", "normalize_to_box", "power_cells_2d"]
