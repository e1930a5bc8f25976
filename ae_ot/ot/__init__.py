"""ae_ot.ot: optimal transport library (torch, plus one optional C++ CPU kernel compiled on first
use; never imports Lightning).

Semi-discrete OT from the uniform measure on a box to a weighted point cloud:

* :mod:`ae_ot.ot.semidiscrete`: :class:`SemiDiscreteOT`, the problem and its queries (assign,
  transport, topk, cell_measures, errors, save/load);
* :mod:`ae_ot.ot.unit_problem`: the same problem on [-1, 1]^d with unit-scale targets, which the
  solver works on (so the solution does not depend on the box's position or scale);
* :mod:`ae_ot.ot.methods`: the solver methods behind one step interface;
* :mod:`ae_ot.ot.fitting`: the fit driver (evaluation schedule, stopping, checkpoints, verdict);
* :mod:`ae_ot.ot.distributed`: targets sharded over ``torch.distributed`` ranks;
* :mod:`ae_ot.ot.kernels`: tiled top-k of <x, y_i> + h_i (torch / fused / KeOps);
* :mod:`ae_ot.ot.fused`: the fused CPU kernel (C++ source beside it, built with the system
  compiler on first use; without one, the torch kernel runs);
* :mod:`ae_ot.ot.geometry2d`: exact 2-D power cells and their areas;
* :mod:`ae_ot.ot.sources`: box samplers;
* :mod:`ae_ot.ot.extension`: AE-OT's extended map; :mod:`ae_ot.ot.minibatch`: minibatch OT.
"""

from ae_ot.ot.fitting import ConvergenceWarning, FitReport, SolverDivergedError
from ae_ot.ot.geometry2d import exact_cell_measures_2d, power_cells_2d
from ae_ot.ot.semidiscrete import SemiDiscreteOT
from ae_ot.ot.sources import normalize_to_box
from ae_ot.ot.unit_problem import noise_floor

__all__ = ["SemiDiscreteOT", "FitReport", "ConvergenceWarning", "SolverDivergedError", "noise_floor",
           "normalize_to_box", "power_cells_2d", "exact_cell_measures_2d"]
