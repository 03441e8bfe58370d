"""Figures a person would rather look at than read: a 2-D flow's density with its samples,
and a grid of samples for image-like flows. Matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["density_figure", "sample_grid"]


def density_figure(flow, path: str | os.PathLike, seed: int = 0, resolution: int = 200) -> None:
    """Heat map of q(x) on a grid covering the flow's samples, with 500 samples on top.
    Flows without an inverse show a histogram of samples instead of q(x)."""
    if flow.event_size != 2:
        raise ValueError(
            f"density_figure needs a 2-D flow; received event shape {flow.data_event_shape}."
        )
    samples = flow.sample(20000, seed=seed).numpy()
    lo, hi = np.percentile(samples, [0.5, 99.5], axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(5, 5))
    if flow.has_inverse:
        xs, ys = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
        density = np.exp(flow.log_prob(grid).numpy()).reshape(resolution, resolution)
        ax.imshow(
            density,
            origin="lower",
            extent=(lo[0], hi[0], lo[1], hi[1]),
            cmap="viridis",
            aspect="auto",
        )
        title = "density q(x) and samples"
    else:
        ax.hist2d(
            samples[:, 0],
            samples[:, 1],
            bins=resolution // 2,
            range=[[lo[0], hi[0]], [lo[1], hi[1]]],
            cmap="viridis",
        )
        title = "samples (histogram; no inverse for q(x) on a grid)"
    ax.scatter(samples[:500, 0], samples[:500, 1], s=2, c="white", alpha=0.6)
    ax.set_title(f"{flow.name}: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def sample_grid(flow, path: str | os.PathLike, seed: int = 0, rows: int = 8) -> None:
    """A rows x rows grid of samples shown as square grey images (64-d digits: 8x8 pixels),
    clipped to [0, 1]."""
    side = round(np.sqrt(flow.event_size))
    if side * side != flow.event_size:
        raise ValueError(
            f"sample_grid needs square images; received event shape {flow.data_event_shape}."
        )
    x = np.clip(flow.sample(rows * rows, seed=seed).numpy().reshape(rows, rows, side, side), 0, 1)
    image = x.transpose(0, 2, 1, 3).reshape(rows * side, rows * side)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{flow.name}: {rows * rows} samples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
