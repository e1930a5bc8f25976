"""ae_ot.ot: optimal transport library (torch, plus one optional C++ CPU kernel compiled on first
use; never imports Lightning).

Semi-discrete OT from the uniform measure on a box to a weighted point cloud:

* :mod:`ae_ot.ot.semidiscrete`: :class:`SemiDiscreteOT`, the three-line entry point;
* :mod:`ae_ot.ot.problem`: :class:`SemiDiscreteProblem`, the problem (immutable);
* :mod:`ae_ot.ot.unit_problem`: the same problem on [-1, 1]^d with unit-scale targets, which the
  solver works on (so the solution does not depend on the box's position or scale);
* :mod:`ae_ot.ot.settings`: :class:`FitSettings`; :mod:`ae_ot.ot.methods`: the solver methods,
  their options and typed states;
* :mod:`ae_ot.ot.fitting`: :func:`~ae_ot.ot.fitting.solve`, the fit driver;
  :mod:`ae_ot.ot.schedule`: when it evaluates and stops; :mod:`ae_ot.ot.evaluation`: held-out
  evaluation; :mod:`ae_ot.ot.checkpoint`: checkpoints and resume; :mod:`ae_ot.ot.report`: the verdict;
* :mod:`ae_ot.ot.solution`: :class:`SemiDiscreteSolution`, heights and report, and the queries;
* :mod:`ae_ot.ot.distributed`: targets sharded over ``torch.distributed`` ranks;
* :mod:`ae_ot.ot.kernels`: tiled top-k of <x, y_i> + h_i (torch / fused / KeOps);
  :mod:`ae_ot.ot.fused`: the fused CPU kernel;
* :mod:`ae_ot.ot.geometry2d`: exact 2-D power cells and their areas;
* :mod:`ae_ot.ot.sources`: box samplers;
* :mod:`ae_ot.ot.extension`: AE-OT's extended map; :mod:`ae_ot.ot.sampler`: AE-OT's latent
  sampler; :mod:`ae_ot.ot.minibatch`: minibatch OT.
"""

from ae_ot.ot.geometry2d import exact_cell_measures_2d, power_cells_2d
from ae_ot.ot.methods import Exact2DOptions, NewtonOptions, PyOMTOptions
from ae_ot.ot.problem import SemiDiscreteProblem
from ae_ot.ot.report import ConvergenceWarning, FitReport, SolverDivergedError
from ae_ot.ot.semidiscrete import SemiDiscreteOT
from ae_ot.ot.settings import FitSettings
from ae_ot.ot.solution import SemiDiscreteSolution
from ae_ot.ot.sources import normalize_to_box
from ae_ot.ot.unit_problem import noise_floor

__all__ = ["SemiDiscreteOT", "SemiDiscreteProblem", "SemiDiscreteSolution", "FitSettings", "NewtonOptions",
           "PyOMTOptions", "Exact2DOptions", "FitReport", "ConvergenceWarning", "SolverDivergedError",
           "noise_floor", "normalize_to_box", "power_cells_2d", "exact_cell_measures_2d"]
