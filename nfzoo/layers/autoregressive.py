r"""Masked autoregressive flows: MAF and IAF, with an affine law and a MADE conditioner.

Both use the affine law x_i = z_i * exp(s_i) + m_i, with (m, s) = MADE(c) and s soft-clamped.
They differ in what the conditioner reads:

* MAF (Papamakarios et al. 2017, arXiv:1705.07057): c = x, the data side. Density
  evaluation is fast; sampling is sequential.

      inverse x -> z: z = (x - m(x)) * exp(-s(x))          one MADE pass (parallel)
      forward z -> x: x_i = z_i exp(s_i(x_<i)) + m_i(x_<i)   D MADE passes (sequential)
      log|det dx/dz| = sum_i s_i(x)

* IAF (Kingma et al. 2016, arXiv:1606.04934): c = z, the noise side. Sampling (and
  reverse-KL training) is fast; density of external points is sequential.

      forward z -> x: x = z * exp(s(z)) + m(z)                one MADE pass (parallel)
      inverse x -> z: z_i = (x_i - m_i(z_<i)) exp(-s_i(z_<i)) D MADE passes (sequential)
      log|det dx/dz| = sum_i s_i(z)

In both, (m_i, s_i) depend on c_<i only, so the Jacobian is triangular:

.. math::

    x_i = z_i\, e^{s_i} + m_i, \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| = \sum_i s_i, \qquad
    (m_i, s_i) = \begin{cases}
        \mathrm{MADE}(x_{<i}) & \text{MAF} \\
        \mathrm{MADE}(z_{<i}) & \text{IAF}
    \end{cases}

The sequential direction is solved in D steps by ``MADE.solve``: step t computes only the MADE
units that coordinate t's parameters need and that the coordinates before it made final, so
the D steps together cost about one MADE pass (the D fixed-point sweeps u <- T(u) of the
textbook solution cost D passes, and give the same u).

Conditional layers (``context_dim=C``) give the MADE an unmasked input c (Papamakarios et
al. 2017, section 3.4, conditional MAF): (m, s) = MADE(x, c), autoregressive in x, any function
of c. The spline autoregressive layer (``nfzoo.layers.spline``) shares this body with its own
element-wise law.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, context_size, register_layer
from nfzoo.layers.coupling import coupling_law
from nfzoo.nets import MADE, MadeWeights, hidden_units_list
from nfzoo.ops import soft_clamp

__all__ = ["Autoregressive", "InverseAutoregressive", "MaskedAutoregressive", "affine_forward"]


def affine_params(made_output: tf.Tensor, log_scale_clamp: float | None):
    """(shift m, log-scale s) from a MADE output [..., 2, D], s soft-clamped."""
    return made_output[..., 0, :], soft_clamp(made_output[..., 1, :], log_scale_clamp)


def affine_forward(
    z: tf.Tensor, shift: tf.Tensor, log_scale: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """x = z * exp(s) + m and log|det dx/dz| = sum_i s_i: the affine law of MAF and IAF, shared
    with ``nfzoo.amortized.AmortizedIAF`` (whose MADE also reads the encoder's context h(x))."""
    return z * tf.exp(log_scale) + shift, tf.reduce_sum(log_scale, axis=-1)


class Autoregressive(BijectorLayer):
    """Shared body of the autoregressive layers (see the module docstring). A subclass sets
    ``params_per_dim``, ``reads`` ("data": MAF's direction; "noise": IAF's) and implements
    ``_law(u, h, inverse)``, the element-wise map given the MADE output h [N, P, D]."""

    #: MADE outputs per dimension
    params_per_dim: int = 2
    #: which side the MADE reads: "data" (MAF: parallel inverse) or "noise" (IAF)
    reads: str = "data"

    def __init__(
        self,
        hidden_units: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        activation: str = "relu",
        seed: int | None = None,
        context_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units_list(hidden_units, type(self).__name__)
        self.ordering = ordering if isinstance(ordering, str) else [int(o) for o in ordering]
        self.activation = activation
        self.seed = seed
        self.context_dim = context_size(context_dim, type(self).__name__)
        self.made = MADE(
            params_per_dim=self.params_per_dim,
            hidden_units=self.hidden_units,
            ordering=self.ordering,
            activation=activation,
            seed=seed,
            context_dim=self.context_dim,
            dtype=self.dtype_policy,
            name="made",
        )

    def _build_event(self, event_shape):
        self.made.build((None, *event_shape))

    def _law(self, u, h, inverse: bool):
        """(u', log|det du'/du| per example) for the MADE output h [N, P, D]."""
        raise NotImplementedError

    def autoregressive_pass(
        self,
        u: tf.Tensor,
        context: tf.Tensor | None,
        inverse: bool,
        weights: MadeWeights | None = None,
        plan: MadeWeights | None = None,
        unroll: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One direction on folded u [N, D]: where the MADE reads this pass's input side
        (MAF's inverse, IAF's forward) one MADE pass on ``weights`` (default: the layer's,
        masked); otherwise ``MADE.solve`` on ``plan`` (``unroll``: the D steps written out).
        Exports pass both frozen as constants."""
        if (self.reads == "data") == inverse:
            weights = weights or self.made.masked_weights()
            return self._law(u, self.made.call_with(weights, u, context), inverse)
        return self.made.solve(
            u, lambda t, h: self._law(t, h, inverse), context, unroll=unroll, plan=plan
        )

    def _forward_and_log_det(self, z, context=None):
        return self.autoregressive_pass(z, context, inverse=False)

    def _inverse_and_log_det(self, x, context=None):
        return self.autoregressive_pass(x, context, inverse=True)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "ordering": self.ordering,
            "activation": self.activation,
            "seed": self.seed,
            "context_dim": self.context_dim,
        }


class _AffineAutoregressive(Autoregressive):
    """The affine law x = z * exp(s) + m of MAF and IAF, s soft-clamped."""

    params_per_dim = 2

    def __init__(self, *args, log_scale_clamp: float | None = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_scale_clamp = log_scale_clamp

    def _law(self, u, h, inverse):
        shift, log_scale = affine_params(h, self.log_scale_clamp)
        return coupling_law(u, shift, log_scale, inverse, u, 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "log_scale_clamp": self.log_scale_clamp}


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
      context_dim: size C of a context the MADE reads, (m, s)(x_<i, c) (None: none).
    """

    reads = "data"


@register_layer
class InverseAutoregressive(_AffineAutoregressive):
    """IAF layer: parallel forward (sampling), sequential inverse (density).

    x_i = z_i * exp(s_i(z_<i)) + m_i(z_<i);  log|det dx/dz| = sum_i s_i(z).
    Cost: forward one MADE pass; inverse D MADE passes. Kingma et al. 2016, arXiv:1606.04934.

    Args: as ``MaskedAutoregressive``.
    """

    reads = "noise"
