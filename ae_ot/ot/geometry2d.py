"""Exact geometry of 2-D power diagrams: the cells as polygons and their exact areas.

In 2-D the cells W_i(h) = {x in B : <x, y_i> + h_i >= <x, y_j> + h_j for all j} of a box B are
convex polygons, so their measures need no Monte Carlo: this module computes them exactly. It is
the oracle of the tests, draws ``ae-ot toy2d``'s pictures, and is the evaluation of
:meth:`ae_ot.ot.SemiDiscreteOT.errors` with ``exact=True`` in 2-D.

Which cells touch: the upper envelope u(x) = max_i <x, y_i> + h_i is the Legendre dual of the
lower convex hull of the lifted points (y_i, -h_i) in R^3. Cells i and j share an edge in R^2
exactly when (y_i, -h_i) and (y_j, -h_j) are joined by an edge of that lower hull, and a point
that is not a vertex of the lower hull has an empty cell. So every cell is the box clipped by
the half-planes of its hull neighbours only (about 6 on average): O(N log N) for the hull plus
O(N) small clips, instead of O(N^2) clips. Degenerate inputs (collinear targets, fewer than four
points) fall back to clipping by every other target.
"""

from __future__ import annotations

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.ot.sources import as_box

__all__ = ["power_cells_2d", "exact_cell_measures_2d", "polygon_area", "PowerDiagram2D", "power_diagram_2d"]


def _hull_neighbours(y: np.ndarray, h: np.ndarray) -> list[np.ndarray] | None:
    """Neighbour lists from the lower convex hull of (y_i, -h_i); None when qhull cannot run."""
    from scipy.spatial import ConvexHull, QhullError

    n = len(y)
    if n < 4:
        return None
    lifted = np.column_stack([y, -h])
    try:
        hull = ConvexHull(lifted)
    except (QhullError, ValueError):
        return None
    # Facets whose outward normal points down (negative last component) form the lower hull.
    lower = hull.simplices[hull.equations[:, 2] < -1e-12]
    edges = np.concatenate([lower[:, [0, 1]], lower[:, [1, 2]], lower[:, [0, 2]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    on_hull = np.zeros(n, dtype=bool)
    on_hull[np.unique(lower)] = True
    return [np.asarray(nb, dtype=np.int64) if on_hull[i] else None for i, nb in enumerate(neighbours)]


def _clip_labelled(poly: np.ndarray, labels: np.ndarray, a: np.ndarray, b: float, label: int):
    """The part of a convex polygon [k, 2] where a.x + b >= 0 (Sutherland-Hodgman, one plane), and
    for every edge (vertex k -> k + 1) the label of the plane that made it (``label`` for the new one)."""
    val = poly @ a + b
    if (val >= 0).all():
        return poly, labels
    if (val < 0).all():
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    out, out_labels = [], []
    k = len(poly)
    for m in range(k):
        p, q = poly[m], poly[(m + 1) % k]
        vp, vq = val[m], val[(m + 1) % k]
        if vp >= 0:
            out.append(p)
            out_labels.append(labels[m])
            if vq < 0:  # leaving: the edge from the crossing runs along the clipping plane
                out.append(p + (vp / (vp - vq)) * (q - p))
                out_labels.append(label)
        elif vq >= 0:  # entering: the rest of this edge keeps its label
            out.append(p + (vp / (vp - vq)) * (q - p))
            out_labels.append(labels[m])
    if len(out) < 3:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    return np.array(out), np.array(out_labels, dtype=np.int64)


class PowerDiagram2D:
    """A 2-D power diagram clipped to a box: cell areas and the facets between cells.

    Attributes
    ----------
    areas : numpy [N]
        Cell areas (not normalised by the box area).
    facet_cells : numpy [F, 2] int
        The two cells (i < j) of every facet.
    facet_lengths : numpy [F]
        Length of every facet.

    vertices : numpy [V, 2]
        Every cell's vertices (with repeats): the minimum over the box of a convex piecewise
        linear function of the diagram lies at one of them.
    """

    def __init__(self, areas, facet_cells, facet_lengths, vertices):
        self.areas, self.facet_cells, self.facet_lengths = areas, facet_cells, facet_lengths
        self.vertices = vertices


def power_diagram_2d(targets: torch.Tensor, heights: torch.Tensor, low=0.0, high=1.0) -> PowerDiagram2D:
    """Cell areas and facets (with their lengths) of a 2-D power diagram clipped to the box.

    The facet lengths give the exact Hessian of the dual energy, d mu(W_i) / d h_j =
    -|F_ij| / (|y_i - y_j| vol(B)) for i != j (the rows sum to 0), which the exact 2-D Newton
    method (:mod:`ae_ot.ot.methods.exact2d`) solves with.
    """
    y = targets.detach().double().cpu().numpy()
    h = heights.detach().double().cpu().numpy()
    lo, hi = (t.double().cpu().numpy() for t in as_box(low, high, 2, dtype=torch.float64))
    centre = (lo + hi) / 2
    h = h + y @ centre
    box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]) - centre
    box_labels = np.array([-1, -2, -3, -4], dtype=np.int64)
    neighbours = _hull_neighbours(y, h)
    n = len(y)
    areas = np.zeros(n)
    facets: dict[tuple[int, int], float] = {}
    vertices = [box + centre]
    for i in range(n):
        if neighbours is not None and neighbours[i] is None:
            continue
        others = neighbours[i] if neighbours is not None else np.delete(np.arange(n), i)
        normals, offsets = y[i] - y[others], h[i] - h[others]
        poly, labels = box, box_labels
        for j in np.argsort((box @ normals.T + offsets).min(0)):
            poly, labels = _clip_labelled(poly, labels, normals[j], offsets[j], int(others[j]))
            if len(poly) == 0:
                break
        if len(poly) == 0:
            continue
        areas[i] = polygon_area(poly)
        vertices.append(poly + centre)
        edge_lengths = np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1)
        for label, length in zip(labels, edge_lengths):
            if label > i:  # each facet once, from its lower-index cell
                facets[(i, int(label))] = facets.get((i, int(label)), 0.0) + float(length)
    if facets:
        cells = np.array(list(facets.keys()), dtype=np.int64)
        lengths = np.array(list(facets.values()))
    else:
        cells, lengths = np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return PowerDiagram2D(areas, cells, lengths, np.concatenate(vertices))


def power_cells_2d(targets: torch.Tensor, heights: torch.Tensor, low=0.0, high=1.0) -> list[np.ndarray]:
    """Exact power cells of a 2-D problem: cell i = box  ∩  {x : <x, y_i - y_j> + h_i - h_j >= 0}.

    Parameters
    ----------
    targets : tensor [N, 2]
    heights : tensor [N]
    low, high : float or tensor [2]
        Box corners.

    Returns
    -------
    list of N numpy arrays [k_i, 2]: the vertices of each convex cell in order (k_i = 0 for an
    empty cell). Computed in float64.
    """
    y = targets.detach().double().cpu().numpy()
    h = heights.detach().double().cpu().numpy()
    if y.ndim != 2 or y.shape[1] != 2 or h.shape != (y.shape[0],):
        raise UserInputError(f"power_cells_2d needs targets [N, 2] and heights [N], got {y.shape} and {h.shape}")
    lo, hi = (t.double().cpu().numpy() for t in as_box(low, high, 2, dtype=torch.float64))
    box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    # Work relative to the box centre: smaller magnitudes, fewer rounding errors near ties.
    centre = (lo + hi) / 2
    h = h + y @ centre
    box = box - centre
    neighbours = _hull_neighbours(y, h)
    cells = []
    for i in range(len(y)):
        if neighbours is not None and neighbours[i] is None:
            cells.append(np.zeros((0, 2)))
            continue
        others = neighbours[i] if neighbours is not None else np.delete(np.arange(len(y)), i)
        normals, offsets = y[i] - y[others], h[i] - h[others]
        poly = box
        # Clip by the most restrictive planes first so the polygon shrinks fast.
        for j in np.argsort((box @ normals.T + offsets).min(0)):
            poly, _ = _clip_labelled(poly, np.zeros(len(poly), dtype=np.int64), normals[j], offsets[j], 0)
            if len(poly) == 0:
                break
        cells.append(poly + centre if len(poly) else poly)
    return cells


def polygon_area(vertices: np.ndarray) -> float:
    """Area of a simple polygon [k, 2] by the shoelace formula (0 for fewer than 3 vertices)."""
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def exact_cell_measures_2d(targets: torch.Tensor, heights: torch.Tensor, low=0.0, high=1.0) -> torch.Tensor:
    """mu(W_i) exactly, as the area fraction of the box: tensor [N] float64, summing to 1."""
    lo, hi = as_box(low, high, 2, dtype=torch.float64)
    volume = float((hi - lo).prod())
    return torch.tensor([polygon_area(p) / volume for p in power_cells_2d(targets, heights, low, high)],
                        dtype=torch.float64)
