"""Logit: RealNVP's pre-processing of dequantized pixel data, as a bijector whose log-det is
counted in the density (Dinh et al. 2016, arXiv:1605.08803, section 4.1).

The data side holds dequantized counts x in [0, K] (a pixel value k in {0..K-1} plus
u ~ U[0, 1); K = ``num_levels``). The normalizing direction maps them to the real line:

    p = alpha + (1 - 2 alpha) x / K       in [alpha, 1 - alpha]
    y = logit(p) = log p - log(1 - p)
    log|det dy/dx| = sum over entries of [log((1 - 2 alpha) / K) - log p - log(1 - p)]

alpha keeps y away from +-infinity at the edges of the range. Because this log-det is part of
the flow, ``Flow.log_prob`` is a density on [0, K]^D itself, and the negative log-likelihood of
the dequantized data in bits per dimension, NLL / (D log 2), is the usual upper bound on the
discrete data's bits per dimension (a uniform model scores exactly log2 K; see
``nfzoo.data.bits_per_dim``). Cost: O(D) either way.

Points outside the range (where p would leave (0, 1)) have no density under the model; their p
is clipped to (eps, 1 - eps), so that no NaN or inf reaches training: the log-density of such
a point is a finite penalty, not a density.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import sum_event

__all__ = ["Logit"]


@register_layer
class Logit(BijectorLayer):
    """Data [0, K]^D (dequantized counts) <-> R^D: y = logit(alpha + (1 - 2 alpha) x / K).

    Args:
      num_levels: K, the number of discrete levels of the data (17 for sklearn's digits,
        256 for 8-bit images).
      alpha: margin that keeps the logit finite at 0 and K (RealNVP: 0.05).
      event_ndims: rank of one event (3 for [H, W, C] images; 1 for vectors).
    """

    def __init__(self, num_levels: int, alpha: float = 0.05, event_ndims: int = 3, **kwargs):
        super().__init__(event_ndims=event_ndims, **kwargs)
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"Logit expects an integer num_levels >= 2; received {num_levels!r}.")
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"Logit expects 0 <= alpha < 0.5; received {alpha!r}.")
        self.num_levels = num_levels
        self.alpha = float(alpha)

    def _scale(self) -> float:
        """dp/dx = (1 - 2 alpha) / K."""
        return (1.0 - 2.0 * self.alpha) / self.num_levels

    def _forward_and_log_det(self, y):
        x = (tf.sigmoid(y) - self.alpha) / self._scale()
        # log p = -softplus(-y), log(1 - p) = -softplus(y): finite for every finite y
        log_det = -tf.nn.softplus(-y) - tf.nn.softplus(y) - np.log(self._scale())
        return x, sum_event(log_det, self.event_ndims)

    def _inverse_and_log_det(self, x):
        eps = np.finfo(x.dtype.as_numpy_dtype).eps
        p = tf.clip_by_value(self.alpha + self._scale() * x, eps, 1.0 - eps)
        log_p, log_q = tf.math.log(p), tf.math.log1p(-p)
        log_det = np.log(self._scale()) - log_p - log_q
        return log_p - log_q, sum_event(log_det, self.event_ndims)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_levels": self.num_levels,
            "alpha": self.alpha,
            "event_ndims": self.event_ndims,
        }
