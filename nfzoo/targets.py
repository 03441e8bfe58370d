"""Unnormalised target densities for variational inference (reverse-KL fitting of flows).

A target maps a batch x of shape [n, D] to log p~(x) of shape [n], where p~ = Z p is an
unnormalised density with normalising constant Z. Everything is written in TensorFlow ops,
works for float32 and float64 (the result has x's dtype) and traces under
``tf.function(jit_compile=True)``.

    targets.get("u1")               a registered target, by name (targets.names())
    targets.get("mixture-ring", num_components=6)   options go to the target's constructor
    targets.as_target(fn, event_dim=2)              any callable log_p(x) -> [n]

Targets whose log Z is known exactly carry it as ``target.log_z`` (None where unknown), so that
KL(q || p) = log Z - ELBO can be measured rather than guessed. Those with a sampler
(``target.can_sample``) also give exact samples, for forward-KL (likelihood) fitting.

Energies of Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows",
arXiv:1505.05770, Table 1, with p~(z) = exp(-U(z)) and z = (z1, z2):

    U1(z) = 1/2 ((||z|| - 2) / 0.4)^2
            - ln( exp(-1/2 ((z1 - 2) / 0.6)^2) + exp(-1/2 ((z1 + 2) / 0.6)^2) )
    U2(z) = 1/2 ((z2 - w1(z)) / 0.4)^2
    U3(z) = -ln( exp(-1/2 ((z2 - w1(z)) / 0.35)^2) + exp(-1/2 ((z2 - w1(z) + w2(z)) / 0.35)^2) )
    U4(z) = -ln( exp(-1/2 ((z2 - w1(z)) / 0.4)^2) + exp(-1/2 ((z2 - w1(z) + w3(z)) / 0.35)^2) )

    w1(z) = sin(2 pi z1 / 4),  w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2),
    w3(z) = 3 sigmoid((z1 - 1) / 0.3)

U2-U4 do not confine z1 (exp(-U) does not decay as ``|z1|`` grows), so as written they are not
normalisable and reverse KL has no minimiser: the flow would spread along z1 forever. The
paper shows them on [-4, 4]^2; here U2-U4 add a soft wall outside that box by default,

    wall(z1) = 1/2 (max(|z1| - 4, 0) / 0.2)^2          (wall=None removes it)

which is zero on the plotted region, so the pictures are the paper's. U1 is normalisable as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from nfzoo._types import TensorLike
from nfzoo.constants import LOG_2PI
from nfzoo.registry import Registry

__all__ = [
    "U1",
    "U2",
    "U3",
    "U4",
    "Banana",
    "CallableTarget",
    "Funnel",
    "GaussianMixture",
    "Target",
    "as_target",
    "get",
    "names",
    "quadrature_log_z",
    "reference_log_z",
    "register_target",
]


class Target:
    """Base class: an unnormalised log-density log p~(x) over vectors of size ``event_dim``.

    Subclasses implement ``_log_prob(x)`` (x: [n, D] tensor of a float dtype; returns [n]).
    ``log_prob`` (and calling the target) checks shapes and dtypes first.

    Attributes:
      event_dim: D, the size of x.
      log_z: the exact log normalising constant log Z, or None where it is unknown.
      plot_range: ((xmin, xmax), (ymin, ymax)) for 2-D pictures.
      name: a short name.
    """

    event_dim: int = 2
    log_z: float | None = None
    plot_range: tuple[tuple[float, float], tuple[float, float]] = ((-4.0, 4.0), (-4.0, 4.0))
    name: str = "target"

    def log_prob(self, x: TensorLike) -> tf.Tensor:
        """log p~(x) for x of shape [n, event_dim]; returns shape [n], x's dtype."""
        x = _as_float(x, self.name)
        if x.shape.rank != 2 or x.shape[-1] != self.event_dim:
            raise ValueError(
                f"Target {self.name!r} expects x of shape [n, {self.event_dim}]; "
                f"received shape {tuple(x.shape)}."
            )
        out = self._log_prob(x)
        _check_output(out, x, self.name)
        return out

    def __call__(self, x: TensorLike) -> tf.Tensor:
        return self.log_prob(x)

    def _log_prob(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    @property
    def can_sample(self) -> bool:
        """Whether ``sample`` gives exact samples of p = p~ / Z."""
        return type(self)._sample is not Target._sample

    def sample(self, n: int, seed: int | np.random.RandomState = 0) -> np.ndarray:
        """``n`` exact samples of p as a float32 array [n, D] (numpy, seeded). ``seed`` may be
        a ``np.random.RandomState``, which is drawn from and left advanced, so that several
        draws (a training set, then a test set) continue one stream."""
        if not self.can_sample:
            raise NotImplementedError(f"Target {self.name!r} has no exact sampler.")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"sample expects a non-negative integer n; received {n!r}.")
        rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
        return self._sample(int(n), rng).astype(np.float32)

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} D={self.event_dim} log_z={self.log_z}>"


def _as_float(x, who: str) -> tf.Tensor:
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        x = tf.constant(x)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(
            f"Target {who!r} expects floating-point input (float32 or float64); "
            f"received dtype {x.dtype.name}."
        )
    return x


def _check_output(out, x: tf.Tensor, who: str) -> None:
    if not isinstance(out, tf.Tensor | tf.Variable):
        raise ValueError(
            f"Target {who!r} must return a tensor of shape [n] = [{x.shape[0]}]; "
            f"received {type(out).__name__}."
        )
    if out.shape.rank != 1 or (
        x.shape[0] is not None and out.shape[0] is not None and out.shape[0] != x.shape[0]
    ):
        raise ValueError(
            f"Target {who!r} must return log p~(x) of shape [n] = [{x.shape[0]}] for x of "
            f"shape {tuple(x.shape)}; received shape {tuple(out.shape)}."
        )
    if out.dtype != x.dtype:
        raise ValueError(
            f"Target {who!r} must return x's dtype {x.dtype.name}; received {out.dtype.name}."
        )


# ---- Rezende & Mohamed (2015), Table 1 --------------------------------------------------


def _w1(z1):
    return tf.sin(2.0 * math.pi * z1 / 4.0)


def _w2(z1):
    return 3.0 * tf.exp(-0.5 * tf.square((z1 - 1.0) / 0.6))


def _w3(z1):
    return 3.0 * tf.sigmoid((z1 - 1.0) / 0.3)


def _log_sum_two(a, b):
    """ln(exp(a) + exp(b)), stable."""
    return tf.reduce_logsumexp(tf.stack([a, b], axis=-1), axis=-1)


class _Energy(Target):
    """A 2-D energy U of arXiv:1505.05770, Table 1: log p~(z) = -U(z) (- wall(z1))."""

    default_wall: float | None = 4.0

    def __init__(self, wall: float | str | None = "default", wall_width: float = 0.2):
        self.wall = self.default_wall if wall == "default" else wall
        self.wall_width = float(wall_width)
        self.name = type(self).__name__.lower()

    def energy(self, x) -> tf.Tensor:
        """U(z) exactly as in Table 1 (without the wall)."""
        return self._energy(x[:, 0], x[:, 1])

    def _log_prob(self, x):
        z1 = x[:, 0]
        log_p = -self._energy(z1, x[:, 1])
        if self.wall is not None:
            over = tf.nn.relu(tf.abs(z1) - self.wall) / self.wall_width
            log_p = log_p - 0.5 * tf.square(over)
        return log_p

    def _energy(self, z1, z2):
        raise NotImplementedError


class U1(_Energy):
    """U1 of arXiv:1505.05770 (a ring with two lobes): see the module docstring.
    Normalisable as written, so no wall by default."""

    default_wall = None

    def _energy(self, z1, z2):
        norm = tf.sqrt(z1 * z1 + z2 * z2)
        ring = 0.5 * tf.square((norm - 2.0) / 0.4)
        lobes = _log_sum_two(-0.5 * tf.square((z1 - 2.0) / 0.6), -0.5 * tf.square((z1 + 2.0) / 0.6))
        return ring - lobes


class U2(_Energy):
    """U2 of arXiv:1505.05770 (a sine wave), with the soft wall at ``|z1| = 4``."""

    def _energy(self, z1, z2):
        return 0.5 * tf.square((z2 - _w1(z1)) / 0.4)


class U3(_Energy):
    """U3 of arXiv:1505.05770 (a sine wave that splits in two), with the soft wall."""

    def _energy(self, z1, z2):
        d = z2 - _w1(z1)
        return -_log_sum_two(-0.5 * tf.square(d / 0.35), -0.5 * tf.square((d + _w2(z1)) / 0.35))


class U4(_Energy):
    """U4 of arXiv:1505.05770 (a sine wave and a shifted copy), with the soft wall."""

    def _energy(self, z1, z2):
        d = z2 - _w1(z1)
        return -_log_sum_two(-0.5 * tf.square(d / 0.4), -0.5 * tf.square((d + _w3(z1)) / 0.35))


# ---- targets with exactly known log Z ----------------------------------------------------


class GaussianMixture(Target):
    """A mixture of diagonal Gaussians times exp(log_z), so log Z = ``log_z`` exactly:

        log p~(x) = log_z + log sum_k w_k N(x; mu_k, diag(s_k^2))
        log N(x; mu, diag(s^2)) = -1/2 sum_d ((x_d - mu_d) / s_d)^2 - sum_d log s_d - D/2 log 2 pi

    Args:
      locs: [K, D] component means.
      scales: [K, D], [K] or a scalar: component standard deviations.
      weights: [K] mixture weights (normalised here), default uniform.
      log_z: the log normalising constant to multiply by (default 0: a normalised density).
      name: a short name.
    """

    def __init__(
        self,
        locs: npt.ArrayLike,
        scales: npt.ArrayLike = 1.0,
        weights: npt.ArrayLike | None = None,
        log_z: float = 0.0,
        name: str = "mixture",
    ):
        locs = np.asarray(locs, np.float64)
        if locs.ndim != 2:
            raise ValueError(f"GaussianMixture locs must have shape [K, D]; received {locs.shape}.")
        k, d = locs.shape
        scale = np.asarray(scales, np.float64)
        if scale.ndim == 1:
            scale = scale[:, None]
        try:
            scale = np.broadcast_to(scale, (k, d)).copy()
        except ValueError:
            raise ValueError(
                f"GaussianMixture scales must broadcast to [K, D] = [{k}, {d}]; "
                f"received shape {scale.shape}."
            ) from None
        if not (scale > 0).all():
            raise ValueError("GaussianMixture scales must be positive.")
        weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
        if weights.shape != (k,) or not (weights > 0).all():
            raise ValueError(
                f"GaussianMixture weights must be {k} positive numbers; received {weights}."
            )
        self.locs, self.scales = locs, scale
        self.weights = weights / weights.sum()
        self.event_dim = d
        self.log_z = float(log_z)
        self.name = name
        reach = np.abs(locs).max() + 4.0 * scale.max()
        self.plot_range = ((-reach, reach), (-reach, reach))

    def _log_prob(self, x):
        dtype = x.dtype
        locs = tf.constant(self.locs, dtype)
        scales = tf.constant(self.scales, dtype)
        # [n, K]: log w_k + log N(x; mu_k, s_k)
        u = (x[:, None, :] - locs) / scales
        log_n = (
            -0.5 * tf.reduce_sum(tf.square(u), axis=-1)
            - tf.constant(np.log(self.scales).sum(axis=-1) + 0.5 * self.event_dim * LOG_2PI, dtype)
            + tf.constant(np.log(self.weights), dtype)
        )
        return tf.reduce_logsumexp(log_n, axis=-1) + tf.constant(self.log_z, dtype)

    def _sample(self, n, rng):
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.locs[k] + self.scales[k] * rng.standard_normal((n, self.event_dim))


class Funnel(Target):
    """Neal's funnel (Neal 2003, "Slice sampling", Ann. Statist. 31(3), section 8), normalised
    (log Z = 0):

        v ~ N(0, 3^2),  x_i | v ~ N(0, exp(v))  for i = 1..D-1   (x = (v, x_1, ..., x_{D-1}))
        log p(x) = log N(v; 0, 3) + sum_i log N(x_i; 0, exp(v / 2))

    Args:
      event_dim: D >= 2 (10 in Neal's paper; 2 for pictures).
      scale: the standard deviation of v (3 in the paper).
    """

    log_z = 0.0

    def __init__(self, event_dim: int = 2, scale: float = 3.0):
        if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 2:
            raise ValueError(f"Funnel needs an integer event_dim >= 2; received {event_dim!r}.")
        self.event_dim = event_dim
        self.scale = float(scale)
        self.name = "funnel"
        self.plot_range = ((-9.0, 9.0), (-10.0, 10.0))

    def _log_prob(self, x):
        v, rest = x[:, 0], x[:, 1:]
        log_pv = -0.5 * tf.square(v / self.scale) - math.log(self.scale) - 0.5 * LOG_2PI
        # x_i | v: standard deviation exp(v/2), so log s = v/2 and 1/s^2 = exp(-v)
        log_px = -0.5 * tf.reduce_sum(tf.square(rest), axis=-1) * tf.exp(-v) - (
            self.event_dim - 1
        ) * (0.5 * v + 0.5 * LOG_2PI)
        return log_pv + log_px

    def _sample(self, n, rng):
        v = self.scale * rng.standard_normal(n)
        rest = np.exp(v / 2)[:, None] * rng.standard_normal((n, self.event_dim - 1))
        return np.concatenate([v[:, None], rest], axis=1)


class Banana(Target):
    """A banana (twisted Gaussian, Haario, Saksman & Tamminen 1999, Comput. Stat. 14(3)),
    normalised (log Z = 0): the map (x1, x2) -> (x1, x2 - b (x1^2 - s1^2)) has unit Jacobian, so

        x1 ~ N(0, s1^2),  x2 | x1 ~ N(b (x1^2 - s1^2), s2^2)
        log p(x) = log N(x1; 0, s1) + log N(x2 - b (x1^2 - s1^2); 0, s2)

    Args:
      curvature: b, the bend of the banana.
      scale1, scale2: s1 and s2.
    """

    event_dim = 2
    log_z = 0.0

    def __init__(self, curvature: float = 0.5, scale1: float = 1.5, scale2: float = 0.5):
        self.b, self.s1, self.s2 = float(curvature), float(scale1), float(scale2)
        self.name = "banana"
        self.plot_range = ((-5.0, 5.0), (-3.0, 7.0))

    def _log_prob(self, x):
        x1, x2 = x[:, 0], x[:, 1]
        u2 = x2 - self.b * (tf.square(x1) - self.s1**2)
        return (
            -0.5 * tf.square(x1 / self.s1)
            - 0.5 * tf.square(u2 / self.s2)
            - math.log(self.s1 * self.s2)
            - LOG_2PI
        )

    def _sample(self, n, rng):
        x1 = self.s1 * rng.standard_normal(n)
        x2 = self.b * (x1**2 - self.s1**2) + self.s2 * rng.standard_normal(n)
        return np.stack([x1, x2], axis=1)


class CallableTarget(Target):
    """Wraps any callable ``log_p(x) -> [n]`` (TF ops) as a target, with the same checks.

    Args:
      fn: the log-density (unnormalised); it gets x as a tensor of shape [n, event_dim].
      event_dim: D (needed where a flow is not there to say it).
      log_z: the exact log normalising constant if known.
      name: a short name (default: the callable's ``__name__``).
    """

    def __init__(
        self, fn: Callable, event_dim: int, log_z: float | None = None, name: str | None = None
    ):
        if not callable(fn):
            raise ValueError(f"A target must be callable log_p(x); received {fn!r}.")
        self.fn = fn
        self.event_dim = int(event_dim)
        self.log_z = log_z
        fallback: str = getattr(fn, "__name__", type(fn).__name__)
        self.name = name or fallback

    def _log_prob(self, x):
        out = self.fn(x)
        if isinstance(out, np.ndarray):
            raise ValueError(
                f"Target {self.name!r} returned a numpy array; write it in TensorFlow ops so it "
                "can be differentiated and compiled."
            )
        return tf.convert_to_tensor(out) if not isinstance(out, tf.Tensor) else out


# ---- registry --------------------------------------------------------------------------

TARGETS: Registry[Callable[..., Target]] = Registry("target")

_Factory = TypeVar("_Factory", bound=Callable[..., Target])


def register_target(name: str) -> Callable[[_Factory], _Factory]:
    """Registers a factory ``(**options) -> Target`` under ``name``."""

    def decorate(factory: _Factory) -> _Factory:
        TARGETS.add(name, factory)
        return factory

    return decorate


def names() -> list[str]:
    """Names accepted by ``get``."""
    return TARGETS.names()


def get(name: str, **options) -> Target:
    """The registered target ``name``, built with ``options``."""
    return TARGETS.get(name)(**options)


def as_target(target: Any, event_dim: int | None = None) -> Target:
    """A Target from a Target, a registered name, or any callable ``log_p(x)``.

    Args:
      target: the target.
      event_dim: the expected event size (from the flow); checked against a Target's own and
        needed for callables.
    """
    if isinstance(target, str):
        target = get(target)
    elif not isinstance(target, Target):
        if not callable(target):
            raise ValueError(
                "A target must be an nfzoo.targets.Target, a registered name "
                f"({', '.join(names())}) or a callable log_p(x); received {target!r}."
            )
        if event_dim is None:
            raise ValueError("A callable target needs event_dim (the size of one x).")
        target = CallableTarget(target, event_dim)
    if event_dim is not None and target.event_dim != event_dim:
        raise ValueError(
            f"Target {target.name!r} has event_dim {target.event_dim}; the flow expects "
            f"event_dim {event_dim}."
        )
    return target


register_target("u1")(U1)
register_target("u2")(U2)
register_target("u3")(U3)
register_target("u4")(U4)
register_target("funnel")(Funnel)
register_target("banana")(Banana)


@register_target("mixture-two")
def _mixture_two(separation: float = 2.0, scale: float = 0.7, log_z: float = 1.5):
    """Two equal Gaussians at (+-separation/2, 0), scale 0.7, times exp(1.5): overlapping
    modes, a flow can cover both by reverse KL. log Z = 1.5 exactly."""
    half = separation / 2.0
    return GaussianMixture([[-half, 0.0], [half, 0.0]], scale, log_z=log_z, name="mixture-two")


@register_target("mixture-ring")
def _mixture_ring(
    num_components: int = 8, radius: float = 3.0, scale: float = 0.5, log_z: float = -2.0
):
    """``num_components`` equal Gaussians on a circle of ``radius``, times exp(-2): well
    separated modes (reverse KL is mode-seeking and tends to miss some). log Z = -2 exactly."""
    angles = 2.0 * np.pi * np.arange(num_components) / num_components
    locs = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(locs, scale, log_z=log_z, name="mixture-ring")


@register_target("mixture-skewed")
def _mixture_skewed(log_z: float = 0.7):
    """Three unequal, overlapping Gaussians with unequal scales in 2-D, times exp(0.7)."""
    return GaussianMixture(
        [[0.0, 0.0], [1.5, 1.0], [-1.0, 1.8]],
        [[1.0, 0.6], [0.5, 0.8], [0.6, 0.4]],
        weights=[0.5, 0.3, 0.2],
        log_z=log_z,
        name="mixture-skewed",
    )


def quadrature_log_z(target: Target, half_width: float = 6.0, num: int = 2001) -> float:
    """log Z of a 2-D target by a Riemann sum on a grid over [-w, w]^2 (``num`` points per
    axis, float64): log sum_ij p~(x_ij) h^2, with h the spacing. Accurate to ~1e-6 for the
    smooth energies here, whose mass lies inside [-6, 6]^2 (U2-U4 with their wall); it is the
    reference log Z of U1-U4, whose log Z has no closed form."""
    target = as_target(target)
    if target.event_dim != 2:
        raise ValueError(
            f"quadrature_log_z integrates 2-D targets; {target.name!r} has D={target.event_dim}."
        )
    xs = np.linspace(-half_width, half_width, num)
    rows = []
    for y in np.array_split(xs, 8):  # 8 strips keep the peak memory at ~100 MB for num=2001
        xx, yy = np.meshgrid(xs, y)
        points = tf.constant(np.stack([xx.ravel(), yy.ravel()], axis=1), tf.float64)
        rows.append(target.log_prob(points).numpy())
    log_p = np.concatenate(rows)
    m = log_p.max()
    return float(m + np.log(np.exp(log_p - m).sum() * (xs[1] - xs[0]) ** 2))


def reference_log_z(target: Target) -> float:
    """The target's exact log Z where known, else (2-D only) ``quadrature_log_z``."""
    target = as_target(target)
    return target.log_z if target.log_z is not None else quadrature_log_z(target)
