"""The figures of ``ae-ot compare``: sample grids, one bar chart per metric, quality against time.

Each figure is written atomically (:func:`ae_ot.viz.save_figure`) with matplotlib's Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

__all__ = ["GRID_SIZE", "TABLE_KEYS", "CURVE_KEYS", "pyplot", "finish_figure", "plot_grids", "plot_bars",
           "plot_quality_vs_time"]

#: samples per generator in the grids
GRID_SIZE = 64
#: the metrics of the comparison table and bar charts
TABLE_KEYS = ["fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5",
              "w2_minibatch_classifier", "modes_covered", "kl_to_uniform", "mean_confidence"]
#: the metrics drawn against time
CURVE_KEYS = ["fid_classifier", "coverage_k5", "kl_to_uniform"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Lay out ``fig``, save it atomically to ``path`` and close it; returns ``path``."""
    from ae_ot.viz import save_figure

    try:
        fig.tight_layout()
        save_figure(fig, path, dpi)
    finally:
        pyplot().close(fig)
    return Path(path)


def _titled(key: str, arrows: bool = True) -> str:
    if arrows:
        return METRIC_NAMES[key] + (" ↑" if HIGHER_IS_BETTER[key] else " ↓")
    return METRIC_NAMES[key] + (" (higher is better)" if HIGHER_IS_BETTER[key] else " (lower is better)")


def _log_scale_if_wide(ax, key: str, values: list[float]) -> None:
    """A log y axis for FID and KL when their values span more than a factor 100."""
    if key in ("fid_classifier", "kl_to_uniform") and values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")


def plot_grids(named_samples: list[tuple[str, object]], path: Path, n: int = GRID_SIZE) -> Path:
    """Sample grids side by side, one titled panel per ``(name, samples [N, C, H, W])``."""
    from ae_ot.viz import make_grid

    k = len(named_samples)
    fig, axes = pyplot().subplots(1, k, figsize=(3.2 * k, 3.6), squeeze=False)
    for ax, (name, samples) in zip(axes[0], named_samples):
        grid = make_grid(samples[:n], nrow=8).numpy()
        if grid.shape[0] == 1:
            ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(grid[:3].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    return finish_figure(fig, path, dpi=110)


def plot_bars(rows: list[dict], path: Path) -> Path:
    """One bar chart per metric of :data:`TABLE_KEYS`, one bar per row with ``metrics``."""
    ok = [r for r in rows if r.get("metrics")]
    names = [r["name"] for r in ok]
    colors = [f"C{i % 10}" for i in range(len(ok))]
    fig, axes = pyplot().subplots(3, 3, figsize=(13, 9.5))
    for ax, key in zip(axes.flat, TABLE_KEYS):
        values = [r["metrics"][key] for r in ok]
        ax.bar(range(len(ok)), values, color=colors)
        ax.set_title(_titled(key, arrows=False), fontsize=9)
        ax.set_xticks(range(len(ok)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        _log_scale_if_wide(ax, key, values)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7)
    return finish_figure(fig, path)


def plot_quality_vs_time(rows: list[dict], path: Path, budget_minutes: float | None = None) -> Path:
    """FID (classifier features), coverage and KL to uniform against wall-clock seconds (training,
    plus AE-OT's OT stage), one line per trained model; a real-data row is a dashed line."""
    fig, axes = pyplot().subplots(1, len(CURVE_KEYS), figsize=(5.2 * len(CURVE_KEYS), 4.2), squeeze=False)
    for ax, key in zip(axes[0], CURVE_KEYS):
        values = []
        for i, row in enumerate(r for r in rows if r.get("points") is not None):
            points = [p for p in row["points"] if p.get("metrics")]
            xs, ys = [p["seconds"] for p in points], [p["metrics"][key] for p in points]
            values += ys
            label = row["name"] + (" (failed)" if row.get("status") == "failed" else "")
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=label)
        for row in rows:
            if row.get("is_real") and row.get("metrics"):
                ax.axhline(row["metrics"][key], color="gray", linestyle="--", label=row["name"])
                values.append(row["metrics"][key])
        if budget_minutes:
            ax.axvline(budget_minutes * 60, color="black", linewidth=0.6, linestyle=":")
        _log_scale_if_wide(ax, key, values)
        ax.set_title(_titled(key), fontsize=9)
        ax.set_xlabel("wall-clock seconds (training; AE-OT: + encoding and OT solve)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return finish_figure(fig, path)
