r"""ActNorm: a per-channel affine map initialised from data (Kingma & Dhariwal 2018, Glow,
arXiv:1807.03039, section 3.1).

    x = z * exp(s) + b    (s, b per channel, the last axis)
    log|det dx/dz| = (number of positions) * sum_c s_c

.. math::

    x = z \odot e^{s} + b, \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| = P \sum_c s_c
    \qquad (P = H W \text{ positions on images, } 1 \text{ on vectors})

Data-dependent initialisation: on the first batch of data x (the forward-output side), b is
set to the per-channel mean and s to the log of the per-channel standard deviation, so the
inverse maps that batch to zero mean and unit variance. ``Flow.fit`` (and ``Flow.initialize``)
does this once, eagerly, before the first training step; the compiled step itself carries no
initialisation branch. Cost: O(D) either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import batch_constant

__all__ = ["ActNorm"]


@register_layer
class ActNorm(BijectorLayer):
    """Per-channel scale and shift with data-dependent initialisation.

    Args:
      event_ndims: rank of the event (1 for vectors; 3 for [H, W, C] images).
      data_init: initialise from the first batch (True) or start at the identity (False).
      eps: added to the standard deviation at initialisation.
    """

    constant_jacobian = True
    initializes_from_data = True

    def __init__(self, event_ndims: int = 1, data_init: bool = True, eps: float = 1e-6, **kw):
        super().__init__(event_ndims=event_ndims, **kw)
        self.data_init = bool(data_init)
        self.eps = float(eps)

    def _build_event(self, event_shape):
        channels = event_shape[-1]
        self._positions = int(np.prod(event_shape[:-1], dtype=np.int64))
        self.log_scale = self.add_weight(shape=(channels,), initializer="zeros", name="log_scale")
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="initialized"
        )
        if not self.data_init:
            self.initialized.assign(1.0)

    @property
    def is_data_initialized(self) -> bool:
        return bool(self.initialized.numpy() > 0)

    def data_initialize(self, x: tf.Tensor) -> None:
        axes = list(range(len(x.shape) - 1))
        mean, var = tf.nn.moments(tf.cast(x, self.dtype), axes=axes)
        self.bias.assign(mean)
        self.log_scale.assign(tf.math.log(tf.sqrt(var) + self.eps))
        self.initialized.assign(1.0)

    def mark_data_initialized(self) -> None:
        self.initialized.assign(1.0)

    def _log_det(self, like):
        return batch_constant(
            self._positions * tf.reduce_sum(self.log_scale), like, self.event_ndims
        )

    def _forward_and_log_det(self, z):
        return z * tf.exp(self.log_scale) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        return (x - self.bias) * tf.exp(-self.log_scale), -self._log_det(x)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "event_ndims": self.event_ndims,
            "data_init": self.data_init,
            "eps": self.eps,
        }
