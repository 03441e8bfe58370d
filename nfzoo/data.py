"""Datasets that need no download, with fixed seeds and splits."""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_baseline_nll", "make_moons", "split"]


def make_moons(n: int, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Two interleaving half circles in 2-D (as sklearn's make_moons), shuffled, float32.

    Args:
      n: number of points (split evenly between the moons).
      noise: standard deviation of the Gaussian noise added to each point.
      seed: random seed.
    """
    if n < 2:
        raise ValueError(f"make_moons needs n >= 2; received {n}.")
    rng = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], axis=1)
    x = np.concatenate([outer, inner]) + rng.normal(scale=noise, size=(n, 2))
    return x[rng.permutation(n)].astype(np.float32)


def split(x: np.ndarray, fractions=(0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
    """Splits ``x`` (already shuffled) into consecutive parts of the given fractions."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1; received {fractions}.")
    cuts = np.cumsum([round(f * len(x)) for f in fractions[:-1]])
    return tuple(np.split(x, cuts))


def gaussian_baseline_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Held-out NLL (nats per example) of the best single Gaussian: the maximum-likelihood
    mean and full covariance of ``train``, scored on ``test``."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, bias=True).reshape(train.shape[1], train.shape[1])
    d = test - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * np.log(2 * np.pi))))
