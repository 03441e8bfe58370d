r"""Residual flows with a rank-one or radial update: planar and radial flows
(Rezende & Mohamed 2015, arXiv:1505.05770).

Planar: the map, its log-det (matrix determinant lemma) and the constraint that makes it
invertible (appendix A.1), enforced by replacing the weight u with u':

    x = z + u' tanh(w^T z + b)
    log|det dx/dz| = log(1 + tanh'(w^T z + b) w^T u')
    w^T u' = m(w^T u) > -1:  u' = u + (m(w^T u) - w^T u) w / |w|^2,
                             m(a) = -1 + max(softplus(a), 1e-3)

.. math::

    x &= z + u' \tanh(w^\top z + b), \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| =
        \log\left(1 + \tanh'(w^\top z + b)\, w^\top u'\right) \\
    u' &= u + \frac{m(w^\top u) - w^\top u}{\lVert w \rVert^2}\, w, \qquad
    m(a) = -1 + \max(\operatorname{softplus}(a), 10^{-3}), \qquad w^\top u' = m(w^\top u) > -1

(the margin 1e-3 keeps the log-det finite under rounding). The inverse reduces to a 1-D
monotone equation: with a = w^T z and y = w^T x,

    a + c tanh(a + b) = y,   c = w^T u' > -1,   root in [y - |c|, y + |c|]

found by bisection to machine precision, then z = x - u' tanh(a + b). Cost: forward O(D);
inverse O(D + iterations).

Radial: with ``r = |z - z0|``, h(r) = 1 / (alpha + r) and beta = -alpha + softplus(.),

    x = z + beta h(r) (z - z0)
    log|det dx/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)
                   = (D - 1) log(1 + beta h) + log(1 + alpha beta / (alpha + r)^2)
    invertible where alpha > 0 and beta >= -alpha

.. math::

    x &= z + \frac{\beta}{\alpha + r}\,(z - z_0), \qquad r = \lVert z - z_0 \rVert, \qquad
    \alpha > 0, \quad \beta \ge -\alpha \\
    \log\left|\det\frac{\partial x}{\partial z}\right| &=
        (D - 1) \log\left(1 + \frac{\beta}{\alpha + r}\right)
        + \log\left(1 + \frac{\alpha \beta}{(\alpha + r)^2}\right)

The inverse is closed-form: the radius r of z solves a quadratic with one non-negative root,

    |x - z0| = r (1 + beta / (alpha + r))
    <=>  r^2 + (alpha + beta - |x - z0|) r - alpha |x - z0| = 0

Cost: O(D) either way.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import fixed_seed

__all__ = ["Planar", "Radial", "planar_forward"]

#: bisection steps of the planar inverse: enough to shrink ``[y - |c|, y + |c|]`` below
#: float64 resolution for ``|c|`` up to ``~1e6 |y|``
PLANAR_BISECTION_STEPS = 100
#: w^T u' >= -1 + margin
PLANAR_CONSTRAINT_MARGIN = 1e-3


def planar_constrained_u(u: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """``u' = u + (m(w^T u) - w^T u) w / |w|^2``, so that w^T u' = m(w^T u) > -1.

    ``u`` and ``w`` are [..., D]: one flow's weights, or per-example parameters with leading
    batch axes (the amortised posteriors of ``nfzoo.vae``)."""
    wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
    # The floor keeps w^T u' off -1 by more than float32 rounding: at exactly -1 the map is
    # still monotone but its Jacobian can vanish (log-det -inf).
    m = -1.0 + tf.maximum(tf.nn.softplus(wu), PLANAR_CONSTRAINT_MARGIN)
    return u + tf.math.divide_no_nan(m - wu, tf.reduce_sum(w**2, axis=-1, keepdims=True)) * w


def planar_forward(
    z: tf.Tensor, u: tf.Tensor, w: tf.Tensor, b: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """x = z + u' tanh(w^T z + b) and log|det dx/dz| = log(1 + tanh'(w^T z + b) w^T u').

    The one implementation of the planar map, shared by ``Planar`` (its weights: u, w [D],
    b scalar) and ``nfzoo.amortized.AmortizedPlanar`` (per-example u, w [B, D], b [B]). ``z`` is
    [..., D] and broadcasts against the parameters' leading axes (e.g. [k, B, D] samples)."""
    u = planar_constrained_u(u, w)
    h = tf.tanh(tf.reduce_sum(z * w, axis=-1) + b)
    x = z + h[..., None] * u
    return x, tf.math.log1p((1.0 - h**2) * tf.reduce_sum(w * u, axis=-1))


@register_layer
class Planar(BijectorLayer):
    """Planar flow x = z + u' tanh(w^T z + b) with the invertibility constraint w^T u' > -1.

    Args:
      init_scale: standard deviation of the initial u and w (small: near the identity).
      seed: seed of the initialisers.
    """

    def __init__(self, init_scale: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.init_scale = float(init_scale)
        self.seed = fixed_seed(seed)

    def _build_event(self, event_shape):
        (dim,) = event_shape
        seed = self.seed
        init = keras.initializers.RandomNormal
        self.w = self.add_weight(
            shape=(dim,), initializer=init(0.0, self.init_scale, seed), name="w"
        )
        self.u = self.add_weight(
            shape=(dim,), initializer=init(0.0, self.init_scale, seed + 1), name="u"
        )
        self.b = self.add_weight(shape=(), initializer="zeros", name="b")

    def constrained_u(self) -> tf.Tensor:
        """``u' = u + (m(w^T u) - w^T u) w / |w|^2``, so that w^T u' = m(w^T u) > -1."""
        return planar_constrained_u(self.u, self.w)

    def _forward_and_log_det(self, z):
        return planar_forward(z, self.u, self.w, self.b)

    def _inverse_and_log_det(self, x):
        u = self.constrained_u()
        c = tf.reduce_sum(self.w * u)
        y = tf.linalg.matvec(x, self.w)
        a = tf.stop_gradient(self._bisect(tf.stop_gradient(y), tf.stop_gradient(c)))
        # One Newton step from the root: leaves the value unchanged (f(a) = y up to rounding)
        # and gives a the implicit-function gradient da = -(df / f'(a)) with respect to y,
        # c and b, which the bisection itself cannot carry.
        h = tf.tanh(a + self.b)
        a = a - (a + c * h - y) / (1.0 + c * (1.0 - h**2))
        h = tf.tanh(a + self.b)
        z = x - h[..., None] * u
        return z, -tf.math.log1p((1.0 - h**2) * c)

    def _bisect(self, y, c):
        """Root of f(a) = a + c tanh(a + b) - y, increasing in a, within [y - |c|, y + |c|]."""
        b = tf.stop_gradient(tf.convert_to_tensor(self.b))

        def step(lo, hi):
            mid = 0.5 * (lo + hi)
            above = mid + c * tf.tanh(mid + b) > y
            return tf.where(above, lo, mid), tf.where(above, mid, hi)

        lo, hi = tf.while_loop(
            lambda lo, hi: True,
            step,
            (y - tf.abs(c), y + tf.abs(c)),
            maximum_iterations=PLANAR_BISECTION_STEPS,
        )
        return 0.5 * (lo + hi)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "init_scale": self.init_scale, "seed": self.seed}


@register_layer
class Radial(BijectorLayer):
    """Radial flow ``x = z + beta (z - z0) / (alpha + |z - z0|)``, alpha > 0, beta >= -alpha.

    Starts at the identity (beta = 0) around a random centre z0.

    Args:
      seed: seed of the initial centre z0.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = fixed_seed(seed)

    def _build_event(self, event_shape):
        (dim,) = event_shape
        self.center = self.add_weight(
            shape=(dim,),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed),
            name="center",
        )
        # softplus(0) = log 2 for both: alpha = log 2, beta = -alpha + log 2 = 0.
        self.alpha_raw = self.add_weight(shape=(), initializer="zeros", name="alpha_raw")
        self.beta_raw = self.add_weight(shape=(), initializer="zeros", name="beta_raw")

    def _alpha_beta(self):
        alpha = tf.nn.softplus(self.alpha_raw)
        return alpha, -alpha + tf.nn.softplus(self.beta_raw)

    def _radius(self, d):
        # sqrt at 0 has an infinite derivative; the floor keeps gradients finite at z = z0
        sq = tf.reduce_sum(d**2, axis=-1)
        return tf.sqrt(tf.maximum(sq, tf.constant(1e-30, d.dtype)))

    def _log_det(self, r, alpha, beta):
        dim = self.event_dim
        return (dim - 1) * tf.math.log1p(beta / (alpha + r)) + tf.math.log1p(
            alpha * beta / (alpha + r) ** 2
        )

    def _forward_and_log_det(self, z):
        alpha, beta = self._alpha_beta()
        d = z - self.center
        r = self._radius(d)
        x = z + (beta / (alpha + r))[..., None] * d
        return x, self._log_det(r, alpha, beta)

    def _inverse_and_log_det(self, x):
        alpha, beta = self._alpha_beta()
        d = x - self.center
        rx = self._radius(d)
        # r^2 + B r - alpha rx = 0, B = alpha + beta - rx; the non-negative root, in the form
        # that avoids cancellation for either sign of B.
        B = alpha + beta - rx
        disc = tf.sqrt(B**2 + 4.0 * alpha * rx)
        r = tf.where(B > 0, 2.0 * alpha * rx / (B + disc), 0.5 * (disc - B))
        z = self.center + d / (1.0 + beta / (alpha + r))[..., None]
        return z, -self._log_det(r, alpha, beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}
