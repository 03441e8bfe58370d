"""Datasets that need no download, with fixed seeds and splits.

2-D toy densities (the usual benchmark set of the flow literature): moons, circles,
8gaussians, pinwheel, checkerboard, 2spirals. Each is an unlimited generator; fixed splits
come from fixed seeds. Tabular: sklearn's bundled 8x8 digits (no download), flattened to
64 dimensions and dequantised. Images: the same digits as [8, 8, 1] grey-level counts
(17 levels), dequantized by uniform noise in a ``tf.data`` pipeline (``dequantized``), and
their metric ``bits_per_dim``. Scores of many rows: ``log_prob_in_batches``, ``mean_nll``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from nfzoo.constants import LOG_2PI
from nfzoo.registry import Registry

if TYPE_CHECKING:  # imported where used: this module loads without TensorFlow
    import tensorflow as tf

__all__ = [
    "DIGITS_BINARY_THRESHOLD",
    "DIGITS_LEVELS",
    "TOY_DATASETS",
    "binarized_digits",
    "bits_per_dim",
    "dequantize",
    "dequantized",
    "digits_images",
    "digits_split",
    "gaussian_baseline_nll",
    "load_dataset",
    "log_prob_in_batches",
    "make_moons",
    "make_toy",
    "mean_nll",
    "split",
    "toy_split",
]

#: name -> generator(n, rng) returning float64 points of shape [n, 2]
TOY_DATASETS: Registry[Callable[[int, np.random.RandomState], np.ndarray]] = Registry("toy dataset")


def _toy(name: str):
    def decorate(fn):
        TOY_DATASETS.add(name, fn)
        return fn

    return decorate


@_toy("moons")
def _moons(n, rng, noise=0.1):
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], axis=1)
    x = np.concatenate([outer, inner]) + rng.normal(scale=noise, size=(n, 2))
    return x[rng.permutation(n)]


@_toy("circles")
def _circles(n, rng):
    # two concentric circles (radii 3 and 1.5) with Gaussian noise
    radius = np.where(rng.rand(n) < 0.5, 3.0, 1.5)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + rng.normal(scale=0.2, size=(n, 2))


@_toy("8gaussians")
def _eight_gaussians(n, rng):
    angles = 2 * np.pi * rng.randint(0, 8, n) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + rng.normal(scale=0.2, size=(n, 2))


@_toy("pinwheel")
def _pinwheel(n, rng, arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25):
    labels = rng.randint(0, arms, n)
    r = rng.normal(1.0, radial_std, n)
    t = rng.normal(0.0, tangential_std, n)
    angle = 2 * np.pi * labels / arms + rate * np.exp(r)
    # a point (r, t) rotated by its arm's angle; the arm bends as r grows
    x = np.stack([r * np.cos(angle) - t * np.sin(angle), r * np.sin(angle) + t * np.cos(angle)], 1)
    return 2.0 * x


@_toy("checkerboard")
def _checkerboard(n, rng):
    # uniform on the 8 dark squares of a 4x4 board on [-4, 4]^2
    x1 = rng.uniform(-4, 4, n)
    column = np.floor(x1 / 2).astype(int)
    row = 2 * rng.randint(-1, 1, n) + (column % 2 == 0)
    x2 = 2 * row + rng.uniform(0, 2, n)
    return np.stack([x1, x2], axis=1)


@_toy("2spirals")
def _two_spirals(n, rng):
    t = np.sqrt(rng.rand(n)) * 3 * np.pi
    sign = np.where(rng.rand(n) < 0.5, 1.0, -1.0)
    x = sign[:, None] * np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) / 3.0
    return x + rng.normal(scale=0.1, size=(n, 2))


def make_toy(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of the 2-D toy density ``name`` (see ``TOY_DATASETS``), float32."""
    if n < 2:
        raise ValueError(f"{name} needs n >= 2 points; received {n}.")
    generator = TOY_DATASETS.get(name)
    return generator(int(n), np.random.RandomState(seed)).astype(np.float32)


def make_moons(n: int, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Two interleaving half circles in 2-D (as sklearn's make_moons), shuffled, float32."""
    if n < 2:
        raise ValueError(f"make_moons needs n >= 2; received {n}.")
    return _moons(int(n), np.random.RandomState(seed), noise=noise).astype(np.float32)


def toy_split(
    name: str, n_train: int, n_val: int, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed train / validation / test sets of a toy density, drawn with seeds
    ``seed``, ``seed + 1`` and ``seed + 2`` (independent samples of the same density)."""
    return (
        make_toy(name, n_train, seed=seed),
        make_toy(name, n_val, seed=seed + 1),
        make_toy(name, n_test, seed=seed + 2),
    )


#: the fixed split of sklearn's 1797 digits used in public teaching code
DIGITS_SPLIT = (1000, 350, 447)


#: grey levels of sklearn's digits (pixel values 0..16)
DIGITS_LEVELS = 17


def _digit_pixels(seed: int) -> np.ndarray:
    """The 1797 digits as [n, 64] counts 0..16 (shipped with sklearn), shuffled by ``seed``."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(np.float64)
    return pixels[np.random.RandomState(seed).permutation(len(pixels))]


def digits_split(
    seed: int = 0, dequantize_seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as 64-d continuous data in [0, 1): (pixel + u) / 17 with
    u ~ U[0, 1) (uniform dequantisation of the 17 grey levels), fixed noise, shuffled with
    ``seed`` and split 1000 / 350 / 447."""
    pixels = _digit_pixels(seed)
    noise = np.random.RandomState(dequantize_seed).rand(*pixels.shape)
    x = ((pixels + noise) / 17.0).astype(np.float32)
    a, b, _ = DIGITS_SPLIT
    return x[:a], x[a : a + b], x[a + b :]


#: binarisation threshold of the digits' grey levels: pixel >= 8 (of 0..16) is on
DIGITS_BINARY_THRESHOLD = 8


def binarized_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as 64-d binary vectors: (train, validation, test) float32 arrays
    of 0/1, pixel = 1 where the grey level is >= ``DIGITS_BINARY_THRESHOLD`` (8 of 0..16).
    Deterministic (a fixed threshold, no random binarisation), no download; the same images,
    shuffled with ``seed`` and split 1000 / 350 / 447, as ``digits_split(seed)`` (there
    floor(17 x) is the grey level)."""
    x = (_digit_pixels(seed) >= DIGITS_BINARY_THRESHOLD).astype(np.float32)
    a, b, _ = DIGITS_SPLIT
    return x[:a], x[a : a + b], x[a + b :]


def digits_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as images: (train, validation, test) float32 arrays of shape
    [n, 8, 8, 1] holding the grey-level counts 0..16 (``DIGITS_LEVELS`` = 17 levels), shuffled
    with ``seed`` and split 1000 / 350 / 447: the same images, in the same order, as
    ``digits_split(seed)``. Not dequantized: see ``dequantize`` and ``dequantized``."""
    x = _digit_pixels(seed).reshape(-1, 8, 8, 1).astype(np.float32)
    a, b, _ = DIGITS_SPLIT
    return x[:a], x[a : a + b], x[a + b :]


def dequantize(counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform dequantization: counts + u with u ~ U[0, 1), one fixed draw from ``seed``."""
    counts = np.asarray(counts)
    noise = np.random.RandomState(seed).rand(*counts.shape)
    return (counts + noise).astype(counts.dtype if counts.dtype.kind == "f" else np.float32)


def dequantized(dataset: tf.data.Dataset, seed: int = 0) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of count batches made continuous: each element x becomes
    x + u, u ~ U[0, 1) drawn afresh for every element (stateless, from a seeded stream), so
    training never sees the same dequantization twice."""
    import tensorflow as tf

    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def add_noise(x, s):
        return x + tf.random.stateless_uniform(tf.shape(x), seed=s, dtype=x.dtype)

    return tf.data.Dataset.zip((dataset, seeds)).map(add_noise)


#: rows per ``model.log_prob`` call in ``log_prob_in_batches``
LOG_PROB_BATCH = 4096


class _HasLogProb(Protocol):
    """What the scores below take as a model: anything whose ``log_prob(x)`` gives one
    value per row of ``x`` (a Flow, a Target)."""

    def log_prob(self, x: np.ndarray, /) -> npt.ArrayLike: ...


def log_prob_in_batches(
    model: _HasLogProb, x: np.ndarray, batch_size: int = LOG_PROB_BATCH, **kwargs
) -> np.ndarray:
    """``model.log_prob`` of the rows of ``x`` (any model with one: a Flow, a Target),
    ``batch_size`` rows per call so that memory stays flat in the number of rows; float64.
    ``kwargs`` (a ``context=`` for one context shared by every row) go to each call."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; received {batch_size!r}.")
    chunks = [
        np.asarray(model.log_prob(x[i : i + batch_size], **kwargs), np.float64)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0,), np.float64)


def mean_nll(
    model: _HasLogProb, x: np.ndarray, batch_size: int = LOG_PROB_BATCH, **kwargs
) -> float:
    """-mean log q(x) over the rows of ``x``, in nats (``log_prob_in_batches``)."""
    if len(x) == 0:
        raise ValueError("mean_nll needs at least one row; received none.")
    return float(-np.mean(log_prob_in_batches(model, x, batch_size, **kwargs)))


def bits_per_dim(
    model: _HasLogProb,
    counts: np.ndarray,
    num_levels: int,
    scale: float = 1.0,
    draws: int = 4,
    seed: int = 0,
    batch_size: int = 1000,
) -> float:
    """Bits per dimension of discrete data under a flow fitted to its dequantization.

    ``counts`` holds integers 0..K-1 (K = ``num_levels``); the model's ``log_prob`` is a
    density q over the continuous data y = scale * (counts + u), u ~ U[0, 1)^D. Then

        -log2 P(counts) <= E_u[-log q(y) - D log(scale)] / log 2       (Jensen's inequality)

    since P(counts) = E_u[q(y)] scale^D. The estimate averages the right side over ``draws``
    fixed dequantizations (seeds ``seed``, ``seed + 1``...) and divides by D:

        bits/dim = mean_{x, u}[-log q(scale (x + u))] / (D log 2) - log2(scale)

    With the logit pre-processing inside the flow (``Logit``, scale 1) q is a density on
    [0, K]^D and every log-det is in ``log_prob``; a flow on (x + u) / K takes scale 1 / K.
    A uniform model scores exactly log2 K either way.
    """
    counts = np.asarray(counts)
    if counts.min() < 0 or counts.max() > num_levels - 1 or not np.all(counts == np.round(counts)):
        raise ValueError(
            f"bits_per_dim expects integer counts in 0..{num_levels - 1}; received values in "
            f"[{counts.min()}, {counts.max()}]."
        )
    dims = int(np.prod(counts.shape[1:]))
    nll = []
    for d in range(draws):
        y = (scale * dequantize(counts, seed=seed + d)).astype(np.float32)
        nll.append(mean_nll(model, y, batch_size))
    return float(np.mean(nll) / (dims * np.log(2.0)) - np.log2(scale))


def load_dataset(spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) from a dataset spec as stored in pretrained configs:
    ``{"name": "moons", "n_train": ..., "n_val": ..., "n_test": ..., "seed": ...}`` for toy
    densities, ``{"name": "digits", "seed": ...}`` for digits as dequantized vectors and
    ``{"name": "digits-images", "seed": ...}`` for digits as [8, 8, 1] counts and
    ``{"name": "binarized-digits", "seed": ...}`` for digits as 64-d binary vectors."""
    name = spec.get("name")
    if name == "digits":
        return digits_split(seed=spec.get("seed", 0))
    if name == "digits-images":
        return digits_images(seed=spec.get("seed", 0))
    if name == "binarized-digits":
        return binarized_digits(seed=spec.get("seed", 0))
    if isinstance(name, str) and name in TOY_DATASETS:
        return toy_split(name, spec["n_train"], spec["n_val"], spec["n_test"], spec.get("seed", 0))
    raise ValueError(
        f"Unknown dataset {name!r}; known: digits, digits-images, binarized-digits, "
        f"{', '.join(TOY_DATASETS.names())}."
    )


def split(x: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
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
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * LOG_2PI)))
