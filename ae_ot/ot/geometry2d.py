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
O(N) small clips, instead of O(N^2) clips. The clips run for all cells at once (numpy arrays of
padded polygons), not one cell at a time. Degenerate inputs (collinear targets, fewer than four
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


def _vertex_slots(counts, k):
    """For padded polygons with ``counts`` [n] vertices in k slots: which slots hold a vertex
    (live [n, k]) and the slot of each vertex's successor around its polygon (following [n, k],
    0 in padding)."""
    slots = np.arange(k)
    live = slots < counts[:, None]
    following = np.where(counts[:, None] > 0, (slots + 1) % np.maximum(counts, 1)[:, None], 0)
    return live, following


def _clip_all(polygons, labels, counts, normals, offsets, plane_labels):
    """One Sutherland-Hodgman step for n convex polygons at once: polygon r keeps its part where
    normals[r] . x + offsets[r] >= 0.

    polygons [n, K, 2] (vertex slots past counts[r] are padding), labels [n, K] (the plane that made
    edge k, from vertex k to vertex k + 1 mod counts[r]), counts [n], normals [n, 2], offsets [n],
    plane_labels [n] (the label of the new edges). Returns the clipped (polygons [n, K', 2],
    labels [n, K'], counts [n]); a polygon left with fewer than 3 vertices is empty (count 0).
    """
    n, k = labels.shape
    live, following = _vertex_slots(counts, k)
    values = np.einsum("nkc,nc->nk", polygons, normals) + offsets[:, None]
    values = np.where(live, values, -1.0)
    next_values = np.take_along_axis(values, following, axis=1)
    next_points = np.take_along_axis(polygons, following[:, :, None], axis=1)
    inside, next_inside = values >= 0, next_values >= 0
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 on edges that do not cross: unused
        fraction = values / (values - next_values)
        crossing = polygons + fraction[:, :, None] * (next_points - polygons)
    # Edge k contributes up to two vertices: its start if inside, or the entry point if it enters;
    # then, if it leaves, the exit point, whose outgoing edge runs along the new plane.
    first = np.where(inside[:, :, None], polygons, crossing)
    first_valid = live & (inside | next_inside)
    second_valid = live & inside & ~next_inside
    points = np.stack([first, crossing], axis=2).reshape(n, 2 * k, 2)
    point_labels = np.stack([labels, np.broadcast_to(plane_labels[:, None], (n, k))], axis=2).reshape(n, 2 * k)
    valid = np.stack([first_valid, second_valid], axis=2).reshape(n, 2 * k)
    new_counts = valid.sum(axis=1)
    new_counts[new_counts < 3] = 0
    order = np.argsort(~valid, axis=1, kind="stable")
    width = max(int(new_counts.max(initial=0)), 1)
    order = order[:, :width]
    kept = np.arange(width) < new_counts[:, None]
    return (np.where(kept[:, :, None], np.take_along_axis(points, order[:, :, None], axis=1), 0.0),
            np.where(kept, np.take_along_axis(point_labels, order, axis=1), 0), new_counts)


def _clipped_cells(y, h, box, neighbours):
    """Every cell i = box ∩ {x : <x, y_i - y_j> + h_i - h_j >= 0 for j in its neighbours}, as padded
    polygons [n, K, 2], edge labels [n, K] (a target's index, or -1..-4 for the box's sides) and
    vertex counts [n] (0: empty). All cells are clipped together, one plane per cell at a time
    (vectorised over the cells, not a Python loop over them)."""
    n = len(y)
    if neighbours is not None:
        others = [np.zeros(0, dtype=np.int64) if nb is None else nb for nb in neighbours]
        not_on_hull = np.array([nb is None for nb in neighbours], dtype=bool)
        return _clip_cells(y, h, box, np.arange(n), others, not_on_hull)
    # Degenerate input (qhull could not run): every other target may bound a cell. Chunks of cells
    # keep the [cells, N - 1] plane arrays at about 2M entries whatever N.
    chunk = max(1, 2_000_000 // max(n, 1))
    parts = []
    for start in range(0, n, chunk):
        cells = np.arange(start, min(n, start + chunk))
        others = [np.delete(np.arange(n), i) for i in cells]
        parts.append(_clip_cells(y, h, box, cells, others, np.zeros(len(cells), dtype=bool)))
    width = max(part[0].shape[1] for part in parts)
    return (np.concatenate([_widen(part[0], width) for part in parts]),
            np.concatenate([_widen(part[1], width) for part in parts]), np.concatenate([part[2] for part in parts]))


def _clip_cells(y, h, box, cells, others, empty):
    """The cells ``cells`` [m] clipped by the planes of their ``others`` (m index arrays), as
    :func:`_clipped_cells` returns them; cells flagged ``empty`` [m] are empty from the start."""
    m = len(cells)
    degree = max((len(o) for o in others), default=0)
    planes = np.full((m, max(degree, 1)), -1, dtype=np.int64)
    for row, o in enumerate(others):
        planes[row, :len(o)] = o
    has_plane = planes >= 0
    safe = np.where(has_plane, planes, 0)
    normals = y[cells][:, None, :] - y[safe]
    offsets = np.where(has_plane, h[cells][:, None] - h[safe], 1.0)
    normals[~has_plane] = 0.0
    # Clip by the most restrictive planes first (the per-cell order of the scalar version).
    restrictiveness = np.where(has_plane, (np.einsum("kc,njc->njk", box, normals) + offsets[:, :, None]).min(2), np.inf)
    order = np.argsort(restrictiveness, axis=1, kind="stable")
    planes = np.take_along_axis(planes, order, 1)
    normals = np.take_along_axis(normals, order[:, :, None], 1)
    offsets = np.take_along_axis(offsets, order, 1)
    polygons = np.broadcast_to(box, (m, 4, 2)).copy()
    labels = np.broadcast_to(np.array([-1, -2, -3, -4], dtype=np.int64), (m, 4)).copy()
    counts = np.where(empty, 0, 4)
    # Rows by decreasing number of planes: column j then clips the first rows only, those with more
    # than j planes (a few cells have many neighbours; most have about 6).
    rows = np.argsort(-has_plane.sum(1), kind="stable")
    planes, normals, offsets = planes[rows], normals[rows], offsets[rows]
    polygons, labels, counts = polygons[rows], labels[rows], counts[rows]
    clipped_rows = has_plane[rows].sum(0)
    for column in range(planes.shape[1]):
        live = np.flatnonzero(counts[:int(clipped_rows[column])])  # empty cells stay empty
        if len(live) == 0:
            break
        part = _clip_all(polygons[live], labels[live], counts[live], normals[live, column], offsets[live, column],
                         planes[live, column])
        width = max(polygons.shape[1], part[0].shape[1])
        polygons, labels = _widen(polygons, width), _widen(labels, width)
        polygons[live], labels[live], counts[live] = _widen(part[0], width), _widen(part[1], width), part[2]
    back = np.empty_like(rows)
    back[rows] = np.arange(m)
    return polygons[back], labels[back], counts[back]


def _widen(array, width):
    """array [n, k, ...] padded with zeros to [n, width, ...]."""
    if array.shape[1] >= width:
        return array
    pad = np.zeros((array.shape[0], width - array.shape[1]) + array.shape[2:], dtype=array.dtype)
    return np.concatenate([array, pad], axis=1)


def _diagram_parts(polygons, labels, counts):
    """Areas [n] (shoelace formula), facets (cells [F, 2] with i < j, summed edge lengths [F]) and
    every vertex [V, 2] of the padded cells of :func:`_clipped_cells`."""
    n, k = labels.shape
    live, following = _vertex_slots(counts, k)
    next_points = np.take_along_axis(polygons, following[:, :, None], axis=1)
    cross = polygons[:, :, 0] * next_points[:, :, 1] - polygons[:, :, 1] * next_points[:, :, 0]
    areas = 0.5 * np.abs(np.where(live, cross, 0.0).sum(1))
    lengths = np.linalg.norm(next_points - polygons, axis=2)
    owner = np.broadcast_to(np.arange(n)[:, None], (n, k))
    shared = live & (labels > owner)  # each facet once, from its lower-index cell
    keys = owner[shared] * n + labels[shared]
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    facet_lengths = np.bincount(inverse, weights=lengths[shared], minlength=len(unique_keys))
    facet_cells = np.stack([unique_keys // n, unique_keys % n], axis=1).astype(np.int64)
    return areas, facet_cells, facet_lengths, polygons[live]


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

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    >>> diagram = power_diagram_2d(y, -(y ** 2).sum(1) / 2)
    >>> isinstance(diagram, PowerDiagram2D), len(diagram.facet_lengths)
    (True, 1)
    """

    def __init__(self, areas, facet_cells, facet_lengths, vertices):
        self.areas, self.facet_cells, self.facet_lengths = areas, facet_cells, facet_lengths
        self.vertices = vertices


def _centred_cells(targets: torch.Tensor, heights: torch.Tensor, low, high):
    """The clipped cells of a 2-D problem in coordinates centred on the box (smaller magnitudes,
    fewer rounding errors near ties): (polygons [N, K, 2], labels [N, K], counts [N], centred box
    corners [4, 2], centre [2]). Shifting x by the centre c shifts h_i by <c, y_i>."""
    y = targets.detach().double().cpu().numpy()
    h = heights.detach().double().cpu().numpy()
    if y.ndim != 2 or y.shape[1] != 2 or h.shape != (y.shape[0],):
        raise UserInputError(f"a 2-D power diagram needs targets [N, 2] and heights [N], got {y.shape} and {h.shape}")
    lo, hi = (t.double().cpu().numpy() for t in as_box(low, high, 2, dtype=torch.float64))
    centre = (lo + hi) / 2
    h = h + y @ centre
    box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]) - centre
    polygons, labels, counts = _clipped_cells(y, h, box, _hull_neighbours(y, h))
    return polygons, labels, counts, box, centre


def power_diagram_2d(targets: torch.Tensor, heights: torch.Tensor, low=0.0, high=1.0) -> PowerDiagram2D:
    """Cell areas and facets (with their lengths) of a 2-D power diagram clipped to the box.

    The facet lengths give the exact Hessian of the dual energy, d mu(W_i) / d h_j =
    -|F_ij| / (|y_i - y_j| vol(B)) for i != j (the rows sum to 0), which the exact 2-D Newton
    method (:mod:`ae_ot.ot.methods.exact2d`) solves with.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    >>> diagram = power_diagram_2d(y, -(y ** 2).sum(1) / 2)
    >>> diagram.areas.tolist()
    [0.5, 0.5]
    """
    polygons, labels, counts, box, centre = _centred_cells(targets, heights, low, high)
    areas, facet_cells, facet_lengths, vertices = _diagram_parts(polygons, labels, counts)
    return PowerDiagram2D(areas, facet_cells, facet_lengths, np.concatenate([box, vertices]) + centre)


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

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    >>> cells = power_cells_2d(y, -(y ** 2).sum(1) / 2)   # these heights give the Voronoi cells
    >>> [len(cell) for cell in cells]
    [4, 4]
    """
    polygons, _, counts, _, centre = _centred_cells(targets, heights, low, high)
    return [polygon[:count] + centre if count else np.zeros((0, 2)) for polygon, count in zip(polygons, counts)]


def polygon_area(vertices: np.ndarray) -> float:
    """Area of a simple polygon [k, 2] by the shoelace formula (0 for fewer than 3 vertices).

    Examples
    --------
    >>> import numpy as np
    >>> polygon_area(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    1.0
    """
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def exact_cell_measures_2d(targets: torch.Tensor, heights: torch.Tensor, low=0.0, high=1.0) -> torch.Tensor:
    """mu(W_i) exactly, as the area fraction of the box: tensor [N] float64, summing to 1.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    >>> exact_cell_measures_2d(y, -(y ** 2).sum(1) / 2).tolist()
    [0.5, 0.5]
    """
    lo, hi = as_box(low, high, 2, dtype=torch.float64)
    volume = float((hi - lo).prod())
    return torch.from_numpy(power_diagram_2d(targets, heights, low, high).areas / volume)
