"""ConditionalAffine: a conditional base distribution N(mu(c), diag sigma(c)^2), written as
the first layer of a conditional flow.

    x = mu(c) + exp(s(c)) * z,   z ~ N(0, I),   (mu, s) = MLP(c),   s soft-clamped
    log|det dx/dz| = sum_i s_i(c)

With z standard normal, x is N(mu(c), diag exp(2 s(c))): the layer next to the base noise
turns the standard normal base into a Gaussian whose mean and scale depend on the context,
and the rest of the flow transforms that Gaussian. Keeping the base fixed and the dependence
in a bijector keeps one mechanism for everything (the context reaches layers only, the base is
the same standard normal, export and TFP's ``bijector_kwargs`` need nothing new). The MLP's
last layer starts at zero: the layer starts as the identity.

Cost: one MLP pass on the context, O(D) either way. The inverse is closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, context_size, register_layer
from nfzoo.layers.coupling import coupling_law
from nfzoo.nets import MLP, hidden_units_list
from nfzoo.ops import soft_clamp

__all__ = ["ConditionalAffine"]


@register_layer
class ConditionalAffine(BijectorLayer):
    """x = mu(c) + exp(s(c)) * z: the conditional Gaussian base N(mu(c), diag sigma(c)^2).

    Args:
      context_dim: C, the size of the context (required).
      hidden_units, activation: the MLP from c to (mu, s).
      log_scale_clamp: bound of the soft clamp on s (None: unclamped).
    """

    def __init__(
        self,
        context_dim: int,
        hidden_units: Sequence[int] = (64, 64),
        activation: str = "relu",
        log_scale_clamp: float | None = 5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.context_dim = context_size(context_dim, "ConditionalAffine")
        if self.context_dim is None:
            raise ValueError("ConditionalAffine reads a context: context_dim is required.")
        self.hidden_units = hidden_units_list(hidden_units, "ConditionalAffine")
        self.activation = activation
        self.log_scale_clamp = log_scale_clamp

    def _build_event(self, event_shape):
        (dim,) = event_shape
        self.net = MLP(
            output_dim=2 * dim,
            hidden_units=self.hidden_units,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="net",
        )
        self.net.build((None, self.context_dim))

    def _shift_and_log_scale(self, context: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h = self.net(context)
        dim = self.event_dim
        return h[..., :dim], soft_clamp(h[..., dim:], self.log_scale_clamp)

    def _forward_and_log_det(self, z, context=None):
        return coupling_law(z, *self._shift_and_log_scale(context), False, z, 1)

    def _inverse_and_log_det(self, x, context=None):
        return coupling_law(x, *self._shift_and_log_scale(context), True, x, 1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "context_dim": self.context_dim,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
        }
