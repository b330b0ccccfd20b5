"""Interactive 2-D slices: one self-contained HTML page each (``landscape plot --format html``).

A page holds the loss surface in 3-D (drag to turn it) with the checkpoint and, where the
plane has one, the training trajectory marked, and the contour view of the same grid beside
it; the axis titles say what each direction is. Plotly's JavaScript is inlined, so the page
works offline and from a file. Plotly is the ``html`` extra, imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.runfile.schema import Grid

CHECKPOINT_COLOR = "#d62728"
TRAJECTORY_COLOR = "#ffffff"


@dataclass(frozen=True)
class SliceView:
    """One 2-D slice as drawn: the grid, what its axes are, and the trajectory if any.

    Attributes:
        grid: the stored loss grid (``alphas [na]``, ``betas [nb]``, ``loss [na, nb]``).
        title: the figure's title.
        axis_titles: what the x and y directions are, e.g. ``("PC 1 (71 %)", "PC 2 (12 %)")``.
        trajectory_xy: ``[n, 2]`` checkpoints projected on the plane, or None.
        trajectory_loss: ``[n]`` the loss at those checkpoints, or None.
    """

    grid: Grid
    title: str
    axis_titles: tuple[str, str]
    trajectory_xy: np.ndarray | None = None
    trajectory_loss: np.ndarray | None = None


def _plotly():
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise LandscapeError("--format html needs plotly: pip install "
                             "'looped-landscape[html]'") from None
    return go, make_subplots


def _center_loss(grid: Grid) -> float:
    """The loss at the grid point nearest the origin (the checkpoint itself)."""
    i, j = int(np.argmin(np.abs(grid.alphas))), int(np.argmin(np.abs(grid.betas)))
    return float(grid.loss[i, j])


def slice_figure(view: SliceView):
    """The Plotly figure of a slice: 3-D surface (left) and contours (right).

    Returns:
        A ``plotly.graph_objects.Figure`` with the traces ``surface``, ``checkpoint (3-D)``,
        ``contour``, ``checkpoint`` and, with a trajectory, ``trajectory (3-D)`` and
        ``trajectory``.
    """
    go, make_subplots = _plotly()
    g = view.grid
    z = np.asarray(g.loss, dtype=np.float64).T  # [nb, na]: rows follow y
    if not np.isfinite(z).any():
        raise LandscapeError(f"{view.title}: every grid cell is missing; run the slice probe")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.14,
                        specs=[[{"type": "scene"}, {"type": "xy"}]],
                        subplot_titles=("loss surface", "contours"))
    x, y = g.alphas.tolist(), g.betas.tolist()
    fig.add_trace(go.Surface(x=x, y=y, z=z, name="surface", colorscale="Viridis",
                             colorbar={"title": {"text": "loss"}, "x": 1.01, "len": 0.85}), 1, 1)
    fig.add_trace(go.Contour(x=x, y=y, z=z, name="contour", colorscale="Viridis",
                             showscale=False, ncontours=20), 1, 2)
    if view.trajectory_xy is not None:
        xy = np.asarray(view.trajectory_xy, dtype=np.float64)
        loss = (np.asarray(view.trajectory_loss, dtype=np.float64)
                if view.trajectory_loss is not None else np.full(len(xy), np.nan))
        line = {"color": TRAJECTORY_COLOR, "width": 4}
        fig.add_trace(go.Scatter3d(x=xy[:, 0], y=xy[:, 1], z=loss, name="trajectory (3-D)",
                                   mode="lines+markers", line=line,
                                   marker={"size": 3, "color": TRAJECTORY_COLOR}), 1, 1)
        fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], name="trajectory",
                                 mode="lines+markers", line={"color": TRAJECTORY_COLOR}), 1, 2)
    mark = {"color": CHECKPOINT_COLOR, "size": 7, "symbol": "diamond"}
    fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=[_center_loss(g)], mode="markers",
                               name="checkpoint (3-D)", marker=mark), 1, 1)
    fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="checkpoint",
                             marker={**mark, "size": 12, "symbol": "star"}), 1, 2)
    ax, ay = view.axis_titles
    fig.update_layout(title={"text": view.title.replace("\n", "<br>")}, height=560, width=1100,
                      margin={"l": 10, "r": 60, "t": 70, "b": 10},
                      legend={"orientation": "h", "y": -0.05},
                      scene={"xaxis_title": ax, "yaxis_title": ay, "zaxis_title": "loss"})
    fig.update_xaxes(title_text=ax, row=1, col=2)
    fig.update_yaxes(title_text=ay, row=1, col=2)
    return fig


def slice_html(view: SliceView) -> str:
    """A self-contained HTML page of a slice (Plotly's JavaScript inlined, no network)."""
    return slice_figure(view).to_html(full_html=True, include_plotlyjs=True,
                                      config={"displaylogo": False})


def save_html(view: SliceView, stem: Path) -> Path:
    """Write ``stem.html``; returns its path."""
    path = Path(stem).with_suffix(".html")
    path.write_text(slice_html(view), encoding="utf-8")
    return path
