r"""FactorOut: the multi-scale split of RealNVP and Glow, with Glow's learned prior.

In the normalizing direction an image x of shape [H, W, C] is split along channels into
x_1 (the first C_1 = floor(C / 2) channels) and x_2 (the other C_2). Only x_1 goes on through
the deeper layers (the ``layers`` this one holds, e.g. a squeeze and more flow steps); x_2 is
"factored out" and modelled by a Gaussian whose mean and log-scale are computed from x_1 by a
zero-initialised convolution (Kingma & Dhariwal 2018, Glow, arXiv:1807.03039, its "split";
Dinh et al. 2016, RealNVP, arXiv:1605.08803, section 3.6):

    z_2 = (x_2 - mu(x_1)) * exp(-s(x_1))         x_2 ~ N(mu(x_1), exp(2 s(x_1)))
    z_1 = f_inner(x_1)                            the deeper layers, normalizing direction
    z   = concat(reshape(z_1, [H, W, C_1]), z_2)  along channels
    log|det dz/dx| = log|det d f_inner / d x_1| - sum s(x_1)

.. math::

    z_2 &= (x_2 - \mu(x_1)) \odot e^{-s(x_1)}, \qquad
    x_2 \sim \mathcal{N}\left(\mu(x_1), e^{2 s(x_1)}\right) \\
    z_1 &= f_\mathrm{inner}(x_1), \qquad z = [z_1, z_2] \\
    \log\left|\det\frac{\partial z}{\partial x}\right|
        &= \log\left|\det\frac{\partial f_\mathrm{inner}}{\partial x_1}\right| - \sum_j s_j(x_1)

Writing the learned prior as this affine map of x_2 onto standard normal noise makes the split
a bijector: with z ~ N(0, I), log p(z) plus this log-det is exactly Glow's
log N(x_2; mu, exp(2 s)) + log p(z_1) + log|det d f_inner / d x_1|. The layer's input and
output both have shape [H, W, C] (z_1 is reshaped from the deeper layers' base shape), so a
whole multi-scale flow keeps an image-shaped base and sampling at a temperature T scales every
scale's noise alike, as in Glow. s is soft-clamped to +-``log_scale_clamp``.

Cost: the deeper layers, plus one 3x3 convolution, in either direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.chain import build_chain, chain_forward, chain_inverse, initialize_chain
from nfzoo.layers.coupling import coupling_law
from nfzoo.nets import ConvNet
from nfzoo.ops import per_image, soft_clamp

__all__ = ["FactorOut"]


@register_layer
class FactorOut(BijectorLayer):
    """Multi-scale split: half the channels go on through ``layers``, the other half is
    modelled by a Gaussian conditioned on the first half (Glow's learned prior).

    Args:
      layers: the deeper BijectorLayers (generative order) acting on the kept half
        [H, W, floor(C / 2)]; they may change its shape (a ``Squeeze``) but keep its size.
      prior_hidden_channels: None (Glow: one zero-initialised 3x3 conv from x_1 to the
        mean and log-scale) or the width of a ConvNet's hidden layers.
      log_scale_clamp: bound of the log-scale s (None: none).
    """

    event_ndims = 3

    def __init__(
        self,
        layers: Sequence[BijectorLayer],
        prior_hidden_channels: int | None = None,
        log_scale_clamp: float | None = 5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, BijectorLayer) or layer.event_ndims != 3:
                raise ValueError(
                    f"FactorOut layers must be nfzoo BijectorLayers on images (event_ndims=3); "
                    f"layer {i} is {type(layer).__name__}."
                )
        self.inner_layers = layers
        self.prior_hidden_channels = prior_hidden_channels
        self.log_scale_clamp = log_scale_clamp

    def _build_event(self, event_shape):
        height, width, channels = event_shape
        if channels < 2:
            raise ValueError(
                f"FactorOut needs >= 2 channels to split; received event shape {event_shape}. "
                "Squeeze first."
            )
        kept = channels // 2
        self._kept_shape = (height, width, kept)
        self._factored = channels - kept
        self.inner_base_shape = build_chain(self.inner_layers, self._kept_shape)
        if int(np.prod(self.inner_base_shape)) != height * width * kept:
            raise ValueError(
                f"FactorOut: the deeper layers must keep the size of their input "
                f"{self._kept_shape}; their base shape is {self.inner_base_shape}."
            )
        self.prior = ConvNet(
            output_channels=2 * self._factored,
            hidden_channels=self.prior_hidden_channels,
            dtype=self.dtype_policy,
            name="prior",
        )
        self.prior.build((None, *self._kept_shape))

    def _prior_params(self, x1: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mu, s) of the factored-out half from the kept half x_1 (data side)."""
        h = per_image(self.prior, x1)
        return h[..., : self._factored], soft_clamp(h[..., self._factored :], self.log_scale_clamp)

    def _forward_and_log_det(self, z):
        return self.forward_with(lambda u: chain_forward(self.inner_layers, u), z)

    def _inverse_and_log_det(self, x):
        return self.inverse_with(lambda u: chain_inverse(self.inner_layers, u), x)

    def forward_with(
        self,
        inner_forward: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor | float]],
        z: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The forward pass with ``inner_forward(z1) -> (x1, log-det)`` standing for the
        deeper layers (export substitutes their frozen kernels)."""
        kept = self._kept_shape[-1]
        batch = tf.shape(z)[:-3]
        z1 = tf.reshape(z[..., :kept], tf.concat([batch, self.inner_base_shape], 0))
        x1, inner_ldj = inner_forward(z1)
        x2, prior_ldj = coupling_law(z[..., kept:], *self._prior_params(x1), False, z, 3)
        return tf.concat([x1, x2], axis=-1), inner_ldj + prior_ldj

    def inverse_with(
        self,
        inner_inverse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor | float]],
        x: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The inverse pass with ``inner_inverse(x1) -> (z1, log-det)`` for the deeper layers."""
        kept = self._kept_shape[-1]
        x1, x2 = x[..., :kept], x[..., kept:]
        z2, prior_ldj = coupling_law(x2, *self._prior_params(x1), True, x, 3)
        z1, inner_ldj = inner_inverse(x1)
        z1 = tf.reshape(z1, tf.concat([tf.shape(x)[:-3], self._kept_shape], 0))
        return tf.concat([z1, z2], axis=-1), inner_ldj + prior_ldj

    # ---- the deeper layers' roles ------------------------------------------------------

    @property
    def has_inverse(self) -> bool:
        return all(layer.has_inverse for layer in self.inner_layers)

    @property
    def needs_data_init(self) -> bool:
        return any(layer.needs_data_init for layer in self.inner_layers)

    @property
    def is_data_initialized(self) -> bool:
        return all(layer.is_data_initialized for layer in self.inner_layers)

    def data_initialize(self, x: tf.Tensor) -> None:
        initialize_chain(self.inner_layers, x[..., : self._kept_shape[-1]])

    def mark_data_initialized(self) -> None:
        for layer in self.inner_layers:
            layer.mark_data_initialized()

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layers": [keras.saving.serialize_keras_object(layer) for layer in self.inner_layers],
            "prior_hidden_channels": self.prior_hidden_channels,
            "log_scale_clamp": self.log_scale_clamp,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> FactorOut:
        config = dict(config)
        config["layers"] = [
            keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
            for c in config["layers"]
        ]
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
