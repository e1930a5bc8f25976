"""The exact 2-D power diagram (ae_ot.ot.geometry2d): cells, areas and facets checked against
brute force, on regular inputs and on the degenerate ones (collinear targets, duplicates, N < 4)."""

import numpy as np
import pytest
import torch

from ae_ot.ot.geometry2d import exact_cell_measures_2d, power_cells_2d, power_diagram_2d


def _problem(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = {"random": 300, "collinear": 40, "duplicates": 80, "one": 1, "two": 2, "three": 3}[kind]
    targets = torch.rand(n, 2, generator=g, dtype=torch.float64)
    if kind == "collinear":
        targets[:, 1] = 0.3
    if kind == "duplicates":
        targets = (targets * 4).round() / 4  # a 5 x 5 lattice: many equal targets
    # -|y|^2 / 2 makes the power diagram the Voronoi diagram (every distinct target has a cell);
    # the noise makes it a general power diagram, with some empty cells.
    heights = -0.5 * (targets ** 2).sum(1) + 0.002 * torch.randn(n, generator=g, dtype=torch.float64)
    return targets, heights


def _grid_owner(targets, heights, low, high, k=400):
    """The cell of every point of a k x k grid of cell centres, by brute-force argmax."""
    axis = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    grid = torch.stack(torch.meshgrid(low[0] + (high[0] - low[0]) * axis, low[1] + (high[1] - low[1]) * axis,
                                      indexing="ij"), -1).reshape(-1, 2)
    return (grid @ targets.T + heights).argmax(1), grid


@pytest.mark.parametrize("kind", ["random", "collinear", "duplicates", "one", "two", "three"])
def test_cells_tile_the_box_and_match_the_brute_force_assignment(kind):
    targets, heights = _problem(kind)
    low, high = torch.tensor([-0.5, 0.0], dtype=torch.float64), torch.tensor([1.5, 1.0], dtype=torch.float64)
    measures = exact_cell_measures_2d(targets, heights, low, high)
    assert abs(float(measures.sum()) - 1) < 1e-12
    owner, _ = _grid_owner(targets, heights, low, high)
    grid_measures = torch.bincount(owner, minlength=len(targets)).double() / owner.numel()
    # Equal targets with equal heights tie: argmax picks one of them, the diagram another.
    if kind == "duplicates":
        keys = [tuple(t) for t in (targets * 4).round().long().tolist()]
        groups = {}
        for i, key in enumerate(keys):
            groups.setdefault((key, float(heights[i])), []).append(i)
        measures = torch.tensor([float(measures[g].sum()) for g in groups.values()])
        grid_measures = torch.tensor([float(grid_measures[g].sum()) for g in groups.values()])
    # A 400 x 400 grid resolves a cell's area to about its perimeter / 400 of the box.
    assert float((measures - grid_measures).abs().max()) < 0.01


def test_cell_vertices_lie_in_their_cells():
    targets, heights = _problem("random", seed=1)
    scores = lambda x: x @ targets.T.numpy() + heights.numpy()  # noqa: E731
    cells = power_cells_2d(targets, heights)
    assert sum(len(c) > 0 for c in cells) > 0
    for i, cell in enumerate(cells):
        if len(cell):
            values = scores(cell)
            assert np.all(values[:, i] >= values.max(1) - 1e-12)
            assert np.all((cell >= -1e-12) & (cell <= 1 + 1e-12))


def test_facet_lengths_are_the_derivatives_of_the_areas():
    # d area_i / d h_j = -|F_ij| / |y_i - y_j| for neighbours j != i (Kitagawa, Merigot and
    # Thibert 2019): a wrong facet list or length breaks the exact 2-D Newton step.
    targets, heights = _problem("random", seed=2)
    diagram = power_diagram_2d(targets, heights)
    assert len(diagram.facet_cells) > len(targets)  # a planar diagram has ~3 facets per cell
    eps = 1e-9  # small: a vertex that appears within +- eps would make the area non-smooth
    for f in np.random.default_rng(0).choice(len(diagram.facet_cells), 30, replace=False):
        i, j = diagram.facet_cells[f]
        up, down = heights.clone(), heights.clone()
        up[j] += eps
        down[j] -= eps
        derivative = (power_diagram_2d(targets, up).areas[i] - power_diagram_2d(targets, down).areas[i]) / (2 * eps)
        expected = -diagram.facet_lengths[f] / float((targets[i] - targets[j]).norm())
        assert derivative == pytest.approx(expected, rel=1e-4, abs=1e-6)
