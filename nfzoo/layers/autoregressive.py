"""Masked autoregressive flows: MAF and IAF, with an affine law and a MADE conditioner.

Both use the affine law x_i = z_i * exp(s_i) + m_i, with (m, s) = MADE(c) and s soft-clamped.
They differ in what the conditioner reads:

* MAF (Papamakarios et al. 2017, arXiv:1705.07057): c = x, the data side.
    inverse x -> z: z = (x - m(x)) * exp(-s(x))          one MADE pass (parallel)
    forward z -> x: x_i = z_i exp(s_i(x_<i)) + m_i(x_<i)   D MADE passes (sequential)
    log|det dx/dz| = sum_i s_i(x)
  Density evaluation is fast; sampling is sequential.

* IAF (Kingma et al. 2016, arXiv:1606.04934): c = z, the noise side.
    forward z -> x: x = z * exp(s(z)) + m(z)                one MADE pass (parallel)
    inverse x -> z: z_i = (x_i - m_i(z_<i)) exp(-s_i(z_<i)) D MADE passes (sequential)
    log|det dx/dz| = sum_i s_i(z)
  Sampling (and reverse-KL training) is fast; density of external points is sequential.

The sequential direction is solved by D fixed-point sweeps u <- T(u), starting from u = 0: after
sweep k the first k coordinates in the ordering are exact, so D sweeps give the exact answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.nets import MADE
from nfzoo.ops import soft_clamp


def affine_params(made_output: tf.Tensor, log_scale_clamp: float | None):
    """(shift m, log-scale s) from a MADE output [..., 2, D], s soft-clamped."""
    return made_output[..., 0, :], soft_clamp(made_output[..., 1, :], log_scale_clamp)


def affine_forward(z: tf.Tensor, shift: tf.Tensor, log_scale: tf.Tensor):
    """x = z * exp(s) + m and log|det dx/dz| = sum_i s_i: the affine law of MAF and IAF, shared
    with ``nfzoo.amortized.AmortizedIAF`` (whose MADE also reads the encoder's context h(x))."""
    return z * tf.exp(log_scale) + shift, tf.reduce_sum(log_scale, axis=-1)


class _AffineAutoregressive(BijectorLayer):
    """Shared body of MAF and IAF (see the module docstring)."""

    def __init__(
        self,
        hidden_units: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        activation: str = "relu",
        log_scale_clamp: float | None = 5.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = [int(h) for h in hidden_units]
        self.ordering = ordering if isinstance(ordering, str) else [int(o) for o in ordering]
        self.activation = activation
        self.log_scale_clamp = log_scale_clamp
        self.seed = seed
        self.made = MADE(
            params_per_dim=2,
            hidden_units=self.hidden_units,
            ordering=self.ordering,
            activation=activation,
            seed=seed,
            dtype=self.dtype_policy,
            name="made",
        )

    def _build_event(self, event_shape):
        self.made.build((None, *event_shape))

    def _params(self, c):
        return affine_params(self.made(c), self.log_scale_clamp)

    def _parallel_forward(self, z, c):
        """x = z * exp(s(c)) + m(c) and sum(s)."""
        return affine_forward(z, *self._params(c))

    def _parallel_inverse(self, x, c):
        """z = (x - m(c)) * exp(-s(c)) and -sum(s)."""
        shift, log_scale = self._params(c)
        return (x - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)

    def _sequential(self, target, sweep):
        """Solves u = sweep(u)[0] by D fixed-point sweeps from u = 0; returns (u, log-det)."""
        D = self.event_shape[-1]
        u0 = tf.zeros_like(target)
        ldj0 = tf.zeros(tf.shape(target)[:-1], target.dtype)

        def body(i, u, _):
            u_next, ldj = sweep(u)
            return i + 1, u_next, ldj

        _, u, ldj = tf.while_loop(
            lambda i, u, ldj: i < D, body, (tf.constant(0), u0, ldj0), maximum_iterations=D
        )
        # The last sweep read the first D-1 coordinates, which were already exact, so its
        # log-det is the log-det at the solution.
        return u, ldj

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "ordering": self.ordering,
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
            "seed": self.seed,
        }


@register_layer
class MaskedAutoregressive(_AffineAutoregressive):
    """MAF layer: parallel inverse (density), sequential forward (sampling).

    x_i = z_i * exp(s_i(x_<i)) + m_i(x_<i);  log|det dx/dz| = sum_i s_i(x).
    Cost: inverse one MADE pass; forward D MADE passes. Papamakarios et al. 2017,
    arXiv:1705.07057.

    Args:
      hidden_units: MADE hidden layer sizes.
      ordering: "natural", "reversed", "random" (seeded) or a permutation of 1..D.
      activation: MADE hidden activation.
      log_scale_clamp: bound of the soft clamp on s (None: unclamped).
      seed: seed of the ordering and initialisers.
    """

    def _inverse_and_log_det(self, x):
        return self._parallel_inverse(x, x)

    def _forward_and_log_det(self, z):
        return self._sequential(z, lambda x: self._parallel_forward(z, x))


@register_layer
class InverseAutoregressive(_AffineAutoregressive):
    """IAF layer: parallel forward (sampling), sequential inverse (density).

    x_i = z_i * exp(s_i(z_<i)) + m_i(z_<i);  log|det dx/dz| = sum_i s_i(z).
    Cost: forward one MADE pass; inverse D MADE passes. Kingma et al. 2016, arXiv:1606.04934.

    Args: as ``MaskedAutoregressive``.
    """

    def _forward_and_log_det(self, z):
        return self._parallel_forward(z, z)

    def _inverse_and_log_det(self, x):
        return self._sequential(x, lambda z: self._parallel_inverse(x, z))
