"""Pictures: 2-D targets and the flows fitted to them (as in Rezende & Mohamed 2015,
arXiv:1505.05770, figure 3), a 2-D flow's density with its samples, and grids of image
samples; written in the format the file's extension names (``IMAGE_FORMATS``: PNG, JPEG,
PDF, SVG), checked before any work is done.

matplotlib is used through its object API and the Agg canvas only, so importing this module
changes no global backend. Files are written atomically (a temporary file in the same folder,
then ``os.replace``): a reader never sees half a PNG.

    plots.plot_fits([(targets.get("u1"), {"planar": flow})], "out/vi/u1.png")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nfzoo import targets as targets_lib
from nfzoo.files import write_file_atomically
from nfzoo.flow import Flow
from nfzoo.vae import FlowVAE

__all__ = [
    "IMAGE_FORMATS",
    "corner_plot",
    "density_figure",
    "flow_density_on_grid",
    "plot_fits",
    "sample_grid",
    "target_density_on_grid",
]


#: file extension -> the format matplotlib writes (JPEG through Pillow, which it requires)
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}


def image_format(path: str | os.PathLike) -> str:
    """The format ``path``'s extension names; a ValueError for any other extension (a .jpg
    that holds PNG bytes is worse than no file)."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(
            f"the image file's extension names its format: one of {', '.join(IMAGE_FORMATS)}; "
            f"received {Path(path).name!r}"
        )
    return IMAGE_FORMATS[suffix]


def _grid(plot_range, size: int):
    (x0, x1), (y0, y1) = plot_range
    xs, ys = np.linspace(x0, x1, size), np.linspace(y0, y1, size)
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([xx.ravel(), yy.ravel()], axis=1)


def target_density_on_grid(
    target: targets_lib.Target | str | Callable[[tf.Tensor], tf.Tensor],
    plot_range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    size: int = 200,
) -> np.ndarray:
    """exp(log p~) on a size x size grid over ``plot_range`` (default the target's), scaled to
    a maximum of 1 (log Z of U1-U4 is unknown; pictures need no normalisation)."""
    target = targets_lib.as_target(target, event_dim=2)
    _, _, points = _grid(plot_range or target.plot_range, size)
    log_p = target.log_prob(tf.constant(points, tf.float64)).numpy()
    return np.exp(log_p - log_p.max()).reshape(size, size)


def flow_density_on_grid(
    flow: Flow,
    plot_range: tuple[tuple[float, float], tuple[float, float]],
    size: int = 200,
    num_samples: int = 200_000,
    seed: int = 0,
    method: str = "auto",
) -> tuple[np.ndarray, str]:
    """The flow's density on the grid, and how it was obtained, as a label: "exact density"
    (log q(x), needs an inverse), or "histogram of N samples" of ``num_samples`` samples (a
    flow without inverse knows its density only at its own samples); ``method`` "auto" takes
    the exact density where it can. Scaled to a maximum of 1."""
    if method not in ("auto", "exact", "histogram"):
        raise ValueError(f"method must be 'auto', 'exact' or 'histogram'; received {method!r}.")
    if method == "exact" and not flow.has_inverse:
        raise ValueError(f"Flow {flow.name} has no inverse: its exact density is unavailable.")
    if method != "histogram" and flow.has_inverse:
        _, _, points = _grid(plot_range, size)
        log_q = tf.function(flow.log_prob)(tf.constant(points, flow.compute_dtype)).numpy()
        return np.exp(log_q - log_q.max()).reshape(size, size), "exact density"
    z = tf.random.stateless_normal(
        (num_samples, *flow.base_event_shape), seed=(seed, 0), dtype=flow.compute_dtype
    )
    x = tf.function(flow.generate)(z).numpy()
    (x0, x1), (y0, y1) = plot_range
    counts, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=size, range=[[y0, y1], [x0, x1]])
    return counts / max(counts.max(), 1.0), f"histogram of {num_samples:,} samples"


def plot_fits(
    rows: Sequence[tuple[Any, Mapping[str, Flow]]],
    path: str | os.PathLike,
    size: int = 200,
    num_samples: int = 200_000,
    seed: int = 0,
    dpi: int = 100,
    overwrite: bool = True,
) -> Path:
    """One row per target: the target's density exp(-U), then each fitted flow's density
    (label -> flow) over the same region. Writes the image atomically (its format from
    ``path``'s extension; ``overwrite=False`` refuses an existing file); returns its path.

    Args:
      rows: (target, {label: flow}) pairs; targets as accepted by ``targets.as_target``.
      path: where the PNG goes (its folder is created).
      size: grid points (and histogram bins) per axis.
      num_samples: samples per histogram, for flows without inverse.
      seed: noise seed of those samples.
    """
    image_format(path)
    rows = list(rows)
    if not rows:
        raise ValueError("plot_fits needs at least one (target, flows) row.")
    cols = 1 + max(len(flows) for _, flows in rows)
    fig = Figure(figsize=(2.6 * cols, 2.6 * len(rows)), dpi=dpi)
    FigureCanvasAgg(fig)
    for r, (target, flows) in enumerate(rows):
        target = targets_lib.as_target(target, event_dim=2)
        plot_range = target.plot_range
        (x0, x1), (y0, y1) = plot_range
        extent = (x0, x1, y0, y1)
        panels = [(target.name, target_density_on_grid(target, plot_range, size), "exp(log p~)")]
        for label, flow in flows.items():
            density, how = flow_density_on_grid(flow, plot_range, size, num_samples, seed)
            panels.append((label, density, how))
        for c, (label, image, how) in enumerate(panels):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(image, origin="lower", extent=extent, cmap="viridis", aspect="auto")
            ax.set_title(f"{label}\n{how}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _save_atomically(fig, Path(path), overwrite)


def density_figure(
    flow: Flow, path: str | os.PathLike, seed: int = 0, size: int = 200, overwrite: bool = True
) -> Path:
    """A 2-D flow on its own: its density (exact where it has an inverse, else a histogram of
    samples) over a region covering its samples, with 500 samples on top. Writes the image
    atomically, as ``plot_fits`` does; returns its path."""
    image_format(path)
    if flow.event_size != 2:
        raise ValueError(
            f"density_figure needs a 2-D flow; received event shape {flow.data_event_shape}."
        )
    samples = flow.sample(20000, seed=seed).numpy()
    lo, hi = np.percentile(samples, [0.5, 99.5], axis=0)
    pad = 0.15 * (hi - lo)
    plot_range = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    density, how = flow_density_on_grid(flow, plot_range, size, seed=seed)
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    (x0, x1), (y0, y1) = plot_range
    ax.imshow(density, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="auto")
    ax.scatter(samples[:500, 0], samples[:500, 1], s=2, c="white", alpha=0.6)
    ax.set_title(f"{flow.name}: {how}, and 500 samples", fontsize=9)
    fig.tight_layout()
    return _save_atomically(fig, Path(path), overwrite)


def sample_grid(
    model: Flow | FlowVAE,
    path: str | os.PathLike,
    seed: int = 0,
    rows: int = 8,
    temperature: float = 1.0,
    value_range: tuple[float, float] | None = None,
    overwrite: bool = True,
) -> Path:
    """A rows x rows grid of samples, shown as images: image flows ([H, W, 1] grey or
    [H, W, 3] colour) as they are, vector flows of a square size D = s^2 (64-d digits) as
    s x s grey images, a FlowVAE's draws through its decoder (binarised digits) as s x s
    black-and-white images. Flows sample at ``temperature``; values are clipped to
    ``value_range`` (default: [0, K] for a flow with logit pre-processing on K levels, else
    [0, 1]). Writes the image atomically, as ``plot_fits`` does; returns its path."""
    image_format(path)
    if isinstance(model, FlowVAE):
        if temperature != 1.0:
            raise ValueError(f"a FlowVAE samples at temperature 1; received {temperature}.")
        shape: tuple[int, ...] = (model.input_dim,)
        size = model.input_dim
        what = "draws through the decoder"
    else:
        shape, size = model.data_event_shape, model.event_size
        what = f"samples, T = {temperature:g}"
    if len(shape) == 3 and shape[-1] in (1, 3):
        height, width, channels = shape
    else:
        side = round(np.sqrt(size))
        if len(shape) != 1 or side * side != size:
            raise ValueError(
                "sample_grid needs images [H, W, 1 or 3] or square vectors; received event "
                f"shape {shape}."
            )
        height, width, channels = side, side, 1
    if value_range is None:
        layers = [] if isinstance(model, FlowVAE) else model.flow_layers
        logit = [layer for layer in layers if type(layer).__name__ == "Logit"]
        value_range = (0.0, float(logit[0].num_levels)) if logit else (0.0, 1.0)
    lo, hi = value_range
    if isinstance(model, FlowVAE):
        x = model.sample(rows * rows, seed=seed).numpy()
    else:
        x = model.sample(rows * rows, seed=seed, temperature=temperature).numpy()
    x = (np.clip(x, lo, hi) - lo) / (hi - lo)
    x = x.reshape(rows, rows, height, width, channels)
    # a one-pixel mid-grey border around each sample keeps neighbours apart
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=0.5)
    height, width = height + 2, width + 2
    image = x.transpose(0, 2, 1, 3, 4).reshape(rows * height, rows * width, channels)
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(
        image[..., 0] if channels == 1 else image,
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_axis_off()
    ax.set_title(f"{model.name}: {rows * rows} {what}", fontsize=9)
    fig.tight_layout()
    return _save_atomically(fig, Path(path), overwrite)


def _save_atomically(fig: Figure, path: Path, overwrite: bool = True) -> Path:
    fmt = image_format(path)
    return write_file_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt), overwrite)


def corner_plot(
    samples: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    truth: Sequence[float] | None = None,
    bins: int = 50,
    limits: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """A corner plot of D-dimensional samples, one colour per set (e.g. a posterior estimate
    and the reference posterior): histograms of each coordinate on the diagonal, 2-D
    histograms (contours of density) of each pair below it. Writes a PNG atomically; returns
    its path.

    Args:
      samples: label -> samples [n, D], all of one D.
      labels: names of the D coordinates (default theta_1..theta_D).
      truth: a point [D] marked on every panel (e.g. the true parameters).
      bins: histogram bins per axis.
      limits: (low, high) per coordinate (default: 0.5 and 99.5 percentiles of all sets).
    """
    sets = {name: np.asarray(s, dtype=np.float64) for name, s in samples.items()}
    if not sets:
        raise ValueError("corner_plot needs at least one set of samples.")
    dims = {s.shape[1] if s.ndim == 2 else -1 for s in sets.values()}
    if len(dims) != 1 or -1 in dims:
        raise ValueError(
            "corner_plot takes sets of samples [n, D] of one D; received shapes "
            f"{[list(s.shape) for s in sets.values()]}."
        )
    dim = int(next(iter(dims)))
    labels = list(labels) if labels is not None else [f"theta_{i + 1}" for i in range(dim)]
    if len(labels) != dim or (truth is not None and len(truth) != dim):
        raise ValueError(f"corner_plot: labels and truth need {dim} entries, one per coordinate.")
    if limits is None:
        stacked = np.concatenate(list(sets.values()))
        limits = list(zip(*np.percentile(stacked, [0.5, 99.5], axis=0)))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    fig = Figure(figsize=(1.9 * dim + 1, 1.9 * dim + 1), dpi=100)
    FigureCanvasAgg(fig)
    for row in range(dim):
        for col in range(row + 1):
            ax = fig.add_subplot(dim, dim, row * dim + col + 1)
            for k, (name, s) in enumerate(sets.items()):
                colour = colours[k % len(colours)]
                if row == col:
                    ax.hist(s[:, col], bins=bins, range=limits[col], density=True,
                            histtype="step", color=colour, label=name)  # fmt: skip
                else:
                    h, xe, ye = np.histogram2d(s[:, col], s[:, row], bins=bins,
                                               range=[limits[col], limits[row]])  # fmt: skip
                    levels = _mass_levels(h, (0.9, 0.5))
                    if levels:
                        ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T,
                                   levels=levels, colors=colour, linewidths=0.8)  # fmt: skip
            if truth is not None:
                ax.axvline(truth[col], color="black", linewidth=0.6)
                if row != col:
                    ax.axhline(truth[row], color="black", linewidth=0.6)
            ax.set_xlim(limits[col])
            if row != col:
                ax.set_ylim(limits[row])
            ax.tick_params(labelsize=6)
            if row == dim - 1:
                ax.set_xlabel(labels[col], fontsize=8)
            if col == 0 and row != 0:
                ax.set_ylabel(labels[row], fontsize=8)
            if row == col == 0:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.05, 1.0))
    fig.tight_layout()
    return _save_atomically(fig, Path(path))


def _mass_levels(counts: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Histogram heights whose upper level sets hold the given fractions of the mass (for
    contours that enclose 90% and 50% of the samples), increasing and distinct."""
    flat = np.sort(counts.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cumulative = np.cumsum(flat) / total
    levels = sorted(
        {float(flat[min(int(np.searchsorted(cumulative, m)), len(flat) - 1)]) for m in masses}
    )
    return [v for v in levels if v > 0]
