r"""Neural spline flows: monotone rational-quadratic splines as the element-wise law of a
coupling layer and of an autoregressive layer (Durkan et al. 2019, arXiv:1906.04032).

The spline maps [-B, B] onto itself through K bins. Bin k spans [x_k, x_k+1] with width
w_k = x_k+1 - x_k, height h_k = y_k+1 - y_k, slope s_k = h_k / w_k and derivatives d_k, d_k+1
at its knots. With xi = (x - x_k) / w_k in [0, 1]:

    g(x) = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_k+1 + d_k - 2 s_k) xi (1 - xi))
    g'(x) = s_k^2 (d_k+1 xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2)
            / (s_k + (d_k+1 + d_k - 2 s_k) xi (1 - xi))^2                  (Durkan eq. 4-5)

.. math::

    g(x) &= y_k + \frac{h_k \left(s_k \xi^2 + d_k \xi (1 - \xi)\right)}
                       {s_k + (d_{k+1} + d_k - 2 s_k)\, \xi (1 - \xi)} \\
    g'(x) &= \frac{s_k^2 \left(d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2\right)}
                  {\left(s_k + (d_{k+1} + d_k - 2 s_k)\, \xi (1 - \xi)\right)^2}

and log|det| = sum_i log g'(x_i). The inverse in bin k (found on the y knots) is the root in
[0, 1] of a xi^2 + b xi + c = 0 with

    a = h_k (s_k - d_k) + (y - y_k)(d_k+1 + d_k - 2 s_k)
    b = h_k d_k - (y - y_k)(d_k+1 + d_k - 2 s_k)
    c = -s_k (y - y_k)
    xi = 2 c / (-b - sqrt(b^2 - 4 a c))                                     (Durkan eq. 6-8)

written in this form because it does not cancel catastrophically. Outside [-B, B] the map is
the identity (log-det 0); the outer knots have derivative 1, so g and g' are continuous there.

Parameters: a conditioner gives 3K - 1 unconstrained numbers per dimension: K widths and K
heights (softmax, at least ``min_bin_size`` of the interval each) and K - 1 interior
derivatives (``min_derivative`` + softplus, shifted so that 0 gives 1). A zero output gives
equal bins and unit derivatives: the identity, so every spline layer starts as the identity.

The bin is found with comparisons and sums, not ``tf.searchsorted``: TFLite has no builtin
for a sorted search, and comparisons compile to XLA and convert to ONNX and TFLite builtins
alike. ``tfb.RationalQuadraticSpline`` computes the same function (tests/test_layers.py
compares them to 1e-10 in float64); it is not used directly because of that search.

Cost: the conditioner, then O(K) per dimension, in either direction (spline coupling); the
spline autoregressive layer has MAF's costs (one MADE pass for the density, D for sampling).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import register_layer
from nfzoo.layers.autoregressive import Autoregressive
from nfzoo.layers.coupling import _Coupling

__all__ = ["SplineAutoregressive", "SplineCoupling", "rational_quadratic_spline", "spline_knots"]

#: defaults of both layers: bins, interval half-width, and the floors that keep every bin
#: and every derivative away from zero (Durkan et al.'s values)
DEFAULT_BINS = 8
DEFAULT_BOUND = 5.0
MIN_BIN_SIZE = 1e-3
MIN_DERIVATIVE = 1e-3


def _softplus(x: tf.Tensor) -> tf.Tensor:
    """log(1 + exp(x)), written with builtins that every export runtime has."""
    return tf.maximum(x, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))


def spline_knots(
    params: tf.Tensor,
    bound: float,
    min_bin_size: float = MIN_BIN_SIZE,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Knots of the splines from unconstrained ``params`` [..., 3K - 1].

    Returns (x knots [..., K + 1], y knots [..., K + 1], derivatives [..., K + 1]); the outer
    knots are exactly -B and B, with derivative 1."""
    bins = (params.shape[-1] + 1) // 3
    if params.shape[-1] != 3 * bins - 1 or min_bin_size * bins >= 1.0:
        raise ValueError(
            f"spline parameters must have 3K - 1 entries with K * min_bin_size < 1; received "
            f"{params.shape[-1]} entries and min_bin_size {min_bin_size}."
        )
    dtype = params.dtype

    def knots(raw):
        sizes = min_bin_size + (1.0 - min_bin_size * bins) * tf.nn.softmax(raw, axis=-1)
        inner = -bound + 2.0 * bound * tf.cumsum(sizes[..., :-1], axis=-1)
        lo = tf.fill(tf.shape(inner[..., :1]), tf.constant(-bound, dtype))
        return tf.concat([lo, inner, -lo], axis=-1)

    # raw derivative 0 gives derivative 1: min + softplus(0 + shift) = 1
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + _softplus(params[..., 2 * bins :] + shift)
    one = tf.ones_like(inner[..., :1])
    return (
        knots(params[..., :bins]),
        knots(params[..., bins : 2 * bins]),
        tf.concat([one, inner, one], axis=-1),
    )


def _bin(values: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """One-hot [..., K] of the bin of ``u`` (inside the interval) among the knots ``values``
    [..., K + 1]: the last left knot <= u, found with comparisons and sums."""
    at_or_past = tf.cast(u[..., None] >= values[..., :-1], u.dtype)  # 1 up to u's bin
    return at_or_past - tf.concat([at_or_past[..., 1:], tf.zeros_like(at_or_past[..., :1])], -1)


def _pick(one_hot: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(one_hot * values, axis=-1)


def _unit_interval(xi: tf.Tensor) -> tf.Tensor:
    """xi kept in [0, 1] against rounding (at the upper knot the root can come out as
    1 + 1e-16) with the gradient of xi itself: a plain clip would zero the derivative there."""
    return xi + tf.stop_gradient(tf.clip_by_value(xi, 0.0, 1.0) - xi)


def rational_quadratic_spline(
    u: tf.Tensor, params: tf.Tensor, bound: float, inverse: bool = False, **floors
) -> tuple[tf.Tensor, tf.Tensor]:
    """The spline g of ``params`` [..., 3K - 1] applied element-wise to ``u`` [...] (g^-1 when
    ``inverse``); returns (output, log|d output / d u|) element-wise. Identity outside
    [-B, B]. ``floors``: ``min_bin_size``, ``min_derivative`` (see ``spline_knots``)."""
    xs, ys, ds = spline_knots(params, bound, **floors)
    inside = tf.abs(u) <= bound
    # Clamped so that the branch not taken stays finite (its gradient is multiplied by 0).
    v = tf.clip_by_value(u, -bound, bound)
    one_hot = _bin(ys if inverse else xs, v)
    x_k, y_k = _pick(one_hot, xs[..., :-1]), _pick(one_hot, ys[..., :-1])
    w = _pick(one_hot, xs[..., 1:]) - x_k
    h = _pick(one_hot, ys[..., 1:]) - y_k
    d_k, d_k1 = _pick(one_hot, ds[..., :-1]), _pick(one_hot, ds[..., 1:])
    s = h / w
    curvature = d_k1 + d_k - 2.0 * s
    if inverse:
        dy = v - y_k
        a = h * (s - d_k) + dy * curvature
        b = h * d_k - dy * curvature
        c = -s * dy
        root = tf.sqrt(tf.maximum(b * b - 4.0 * a * c, 0.0))
        xi = _unit_interval(2.0 * c / (-b - root))
        out = x_k + xi * w
    else:
        xi = _unit_interval((v - x_k) / w)
    mix = xi * (1.0 - xi)
    denominator = s + curvature * mix
    log_slope = (
        2.0 * tf.math.log(s)
        + tf.math.log(d_k1 * xi * xi + 2.0 * s * mix + d_k * (1.0 - xi) * (1.0 - xi))
        - 2.0 * tf.math.log(denominator)
    )
    if not inverse:
        out = y_k + h * (s * xi * xi + d_k * mix) / denominator
        return tf.where(inside, out, u), tf.where(inside, log_slope, tf.zeros_like(u))
    return tf.where(inside, out, u), tf.where(inside, -log_slope, tf.zeros_like(u))


class _SplineLaw:
    """The spline options shared by both layers, and the law on conditioner outputs laid out
    [..., dimension, 3K - 1]."""

    def _init_spline(self, bins: int, bound: float) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
            raise ValueError(
                f"{type(self).__name__}: bins must be an integer >= 2; received {bins!r}."
            )
        if isinstance(bound, bool) or not (isinstance(bound, int | float) and bound > 0):
            raise ValueError(
                f"{type(self).__name__}: bound must be a number > 0; received {bound!r}."
            )
        self.bins = int(bins)
        self.bound = float(bound)

    def _spline(self, u, params, inverse):
        out, log_slope = rational_quadratic_spline(u, params, self.bound, inverse)
        return out, tf.reduce_sum(log_slope, axis=-1)

    def _spline_config(self) -> dict:
        return {"bins": self.bins, "bound": self.bound}


@register_layer
class SplineCoupling(_SplineLaw, _Coupling):
    """Rational-quadratic spline coupling (NSF, Durkan et al. 2019, arXiv:1906.04032):
    x_a = z_a, x_b = g(z_b; theta(z_a)), each coordinate of b through its own monotone spline
    of ``bins`` bins on [-bound, bound], identity outside; log|det dx/dz| = sum_b log g'(z_b).

    Cost: one conditioner pass, then O(K) per moved coordinate, in either direction.

    Args:
      mask, flip, hidden_units, activation, context_dim: as ``AffineCoupling``.
      bins: K, the number of bins.
      bound: B, the half-width of the interval the splines act on.
    """

    def __init__(self, *args, bins: int = DEFAULT_BINS, bound: float = DEFAULT_BOUND, **kwargs):
        self._init_spline(bins, bound)
        self.params_per_dim = 3 * self.bins - 1
        super().__init__(*args, **kwargs)

    def _law(self, b, h, inverse):
        params = tf.reshape(h, [-1, len(self._move), self.params_per_dim])
        return self._spline(b, params, inverse)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._spline_config()}


@register_layer
class SplineAutoregressive(_SplineLaw, Autoregressive):
    """Rational-quadratic spline autoregressive layer (NSF's autoregressive variant, MAF's
    direction): x_i = g(z_i; theta_i(x_<i)), theta from a MADE reading the data side;
    log|det dx/dz| = sum_i log g'(z_i).

    Cost: inverse (density) one MADE pass; forward (sampling) D MADE passes.

    Args:
      hidden_units, ordering, activation, seed, context_dim: as ``MaskedAutoregressive``.
      bins, bound: as ``SplineCoupling``.
    """

    reads = "data"

    def __init__(self, *args, bins: int = DEFAULT_BINS, bound: float = DEFAULT_BOUND, **kwargs):
        self._init_spline(bins, bound)
        self.params_per_dim = 3 * self.bins - 1
        super().__init__(*args, **kwargs)

    def _law(self, u, h, inverse):
        # MADE gives [N, P, D]; the law wants each dimension's P parameters together
        return self._spline(u, tf.transpose(h, [0, 2, 1]), inverse)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._spline_config()}
