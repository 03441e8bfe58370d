r"""Coupling layers on images [H, W, C] with a convolutional conditioner: NICE's additive and
RealNVP's affine law, with RealNVP's two masks (Dinh et al. 2016, arXiv:1605.08803, section
3.4) and Glow's conditioner (Kingma & Dhariwal 2018, arXiv:1807.03039):

* ``mask="channel"``: the first half of the channels passes through and conditions the
  second half (``flip`` swaps the halves). The conditioner sees only the kept channels.
* ``mask="checkerboard"``: pixels with (row + column) even pass through and condition the
  others (``flip`` swaps them), in every channel. The conditioner sees the image with the
  moved pixels zeroed, and its outputs at kept pixels are discarded (multiplied by zero).

With a the kept part and b the moved part:

    additive:  x_b = z_b + t(z_a)                 log|det dx/dz| = 0
    affine:    x_b = z_b * exp(s(z_a)) + t(z_a)   log|det dx/dz| = sum over moved entries of s

.. math::

    \text{additive:} \quad & x_b = z_b + t(z_a), \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| = 0 \\
    \text{affine:} \quad & x_b = z_b \odot e^{s(z_a)} + t(z_a), \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| = \sum_{j \in b} s_j(z_a)

and the inverse reads the same conditioner on x_a = z_a. s is soft-clamped to
+-``log_scale_clamp`` (``c * tanh(s / c)``). The conditioner (``nets.ConvNet``: 3x3 -> 1x1 ->
zero-initialised 3x3) makes each layer start as the identity. Cost: one conditioner pass in
either direction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.layers.coupling import coupling_law
from nfzoo.nets import ConvNet
from nfzoo.ops import per_image, soft_clamp

__all__ = ["ImageAdditiveCoupling", "ImageAffineCoupling"]

MASKS = ("channel", "checkerboard")


class _ImageCoupling(BijectorLayer):
    """Shared body of the image couplings: masks, the conditioner and the two directions."""

    event_ndims = 3
    #: conditioner outputs per moved entry (1: shift; 2: shift and log-scale)
    params_per_entry: int

    def __init__(
        self,
        mask: str = "channel",
        flip: bool = False,
        hidden_channels: int = 64,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mask not in MASKS:
            raise ValueError(f"Image coupling mask must be one of {MASKS}; received {mask!r}.")
        self.mask = mask
        self.flip = bool(flip)
        self.hidden_channels = int(hidden_channels)
        self.activation = activation

    def _build_event(self, event_shape):
        height, width, channels = event_shape
        if self.mask == "channel":
            if channels < 2:
                raise ValueError(
                    f"{type(self).__name__} with mask='channel' needs >= 2 channels; received "
                    f"event shape {event_shape}. Squeeze first, or use mask='checkerboard'."
                )
            half = channels // 2
            kept, moved = (channels - half, half) if self.flip else (half, channels - half)
            self._sizes = (kept, moved)
            inputs, outputs = kept, moved
        else:
            if height * width < 2:
                raise ValueError(
                    f"{type(self).__name__} with mask='checkerboard' needs >= 2 pixels; "
                    f"received event shape {event_shape}."
                )
            rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
            keep = ((rows + cols) % 2 == (1 if self.flip else 0)).astype(np.float64)
            self._keep_mask = keep[:, :, None]  # [H, W, 1], broadcast over channels
            inputs, outputs = channels, channels
        self.conditioner = ConvNet(
            output_channels=self.params_per_entry * outputs,
            hidden_channels=self.hidden_channels,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="conditioner",
        )
        self.conditioner.build((None, height, width, inputs))

    def _params(self, a):
        """(t, s) for the moved part from the kept part; s is None for the additive law."""
        h = per_image(self.conditioner, a)
        if self.params_per_entry == 1:
            return h, None
        n = h.shape[-1] // 2
        return h[..., :n], soft_clamp(h[..., n:], self.log_scale_clamp)

    def _transform(self, u, inverse: bool):
        if self.mask == "channel":
            kept, moved = self._sizes
            if self.flip:  # layout [moved | kept]
                b, a = u[..., :moved], u[..., moved:]
            else:  # layout [kept | moved]
                a, b = u[..., :kept], u[..., kept:]
            t, s = self._params(a)
        else:
            m = tf.constant(self._keep_mask, u.dtype)
            a, b = u * m, u
            t, s = self._params(a)
            t = t * (1.0 - m)  # kept pixels: shift 0 and log-scale 0, so they pass unchanged
            s = None if s is None else s * (1.0 - m)
        b, log_det = coupling_law(b, t, s, inverse, u, 3)
        if self.mask == "checkerboard":
            return b, log_det
        return tf.concat([b, a] if self.flip else [a, b], axis=-1), log_det

    def _forward_and_log_det(self, z):
        return self._transform(z, inverse=False)

    def _inverse_and_log_det(self, x):
        return self._transform(x, inverse=True)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mask": self.mask,
            "flip": self.flip,
            "hidden_channels": self.hidden_channels,
            "activation": self.activation,
        }


@register_layer
class ImageAdditiveCoupling(_ImageCoupling):
    """Additive coupling on images: x_b = z_b + t(z_a); log|det dx/dz| = 0.

    Args:
      mask: "channel" (channel halves) or "checkerboard" (alternate pixels).
      flip: swap the kept and moved parts (alternate it between successive layers).
      hidden_channels, activation: the ConvNet conditioner (3x3 -> 1x1 -> zero 3x3).

    The log-det is constant but the Jacobian is not (t depends on z_a): ``constant_jacobian``
    stays False, or TFP would take the map for affine (``mean()`` = forward(base mean)).
    """

    params_per_entry = 1


@register_layer
class ImageAffineCoupling(_ImageCoupling):
    """Affine coupling on images: x_b = z_b * exp(s(z_a)) + t(z_a);
    log|det dx/dz| = sum of s over the moved entries, s soft-clamped to
    +-``log_scale_clamp``.

    Args: as ``ImageAdditiveCoupling``, plus ``log_scale_clamp`` (bound of the log-scale;
    None: none).
    """

    params_per_entry = 2

    def __init__(self, *args, log_scale_clamp: float | None = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_scale_clamp = log_scale_clamp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "log_scale_clamp": self.log_scale_clamp}
