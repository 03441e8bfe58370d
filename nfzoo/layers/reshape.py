"""Squeeze: RealNVP's and Glow's 2x2 space-to-depth reshaping (Dinh et al. 2016,
arXiv:1605.08803, section 3.6; Kingma & Dhariwal 2018, arXiv:1807.03039).

    normalizing direction (inverse):  [H, W, C] -> [H/2, W/2, 4C]   (tf.nn.space_to_depth)
    generative direction (forward):   [H/2, W/2, 4C] -> [H, W, C]   (tf.nn.depth_to_space)
    log|det| = 0 (a permutation of the entries)

Each 2x2 block of pixels becomes one pixel with four times the channels, so that later layers
(channel couplings, 1x1 convolutions) mix neighbouring pixels. Cost: a copy.
"""

from __future__ import annotations

import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import batch_constant, per_image

__all__ = ["Squeeze"]


@register_layer
class Squeeze(BijectorLayer):
    """Space-to-depth by 2 in the normalizing direction: data [H, W, C] <-> base
    [H/2, W/2, 4C]; log|det| = 0. H and W must be even.

    The layer is built, like every layer, on its forward-input (base-side) shape
    [H/2, W/2, 4C]; ``Flow`` computes it from the data shape with ``inverse_event_shape``.
    """

    event_ndims = 3
    constant_jacobian = True

    def _build_event(self, event_shape):
        if event_shape[-1] % 4:
            raise ValueError(
                f"Squeeze expects a base-side event [H/2, W/2, 4C] with channels divisible by "
                f"4; received event shape {event_shape}."
            )

    def _forward_event_shape(self, input_shape):
        h, w, c = input_shape[-3:]
        return input_shape[:-3].concatenate([2 * h, 2 * w, c // 4])

    def _inverse_event_shape(self, output_shape):
        h, w, c = tf.TensorShape(output_shape[-3:]).as_list()
        if h % 2 or w % 2:
            raise ValueError(
                f"Squeeze needs an even height and width; received event shape {[h, w, c]}."
            )
        return output_shape[:-3].concatenate([h // 2, w // 2, 4 * c])

    def _forward_event_shape_tensor(self, input_shape):
        return tf.concat([input_shape[:-3], input_shape[-3:-1] * 2, input_shape[-1:] // 4], 0)

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.concat([output_shape[:-3], output_shape[-3:-1] // 2, output_shape[-1:] * 4], 0)

    def _forward_and_log_det(self, z):
        x = per_image(lambda u: tf.nn.depth_to_space(u, 2), z)
        return x, batch_constant(0.0, z, 3)

    def _inverse_and_log_det(self, x):
        z = per_image(lambda u: tf.nn.space_to_depth(u, 2), x)
        return z, batch_constant(0.0, x, 3)
