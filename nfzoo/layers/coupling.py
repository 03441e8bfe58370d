r"""Coupling layers: NICE (additive) and RealNVP (affine).

A binary mask splits the event into a part a that passes through and a part b that is
transformed, conditioned on a (Dinh et al. 2014, arXiv:1410.8516; 2016, arXiv:1605.08803):

    additive (NICE):   x_a = z_a,  x_b = z_b + t(z_a)                log|det| = 0
    affine (RealNVP):  x_a = z_a,  x_b = z_b * exp(s(z_a)) + t(z_a)  log|det| = sum s(z_a)

.. math::

    \text{additive (NICE):} \quad & x_a = z_a, \quad x_b = z_b + t(z_a), \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| = 0 \\
    \text{affine (RealNVP):} \quad & x_a = z_a, \quad x_b = z_b \odot e^{s(z_a)} + t(z_a),
    \qquad \log\left|\det\frac{\partial x}{\partial z}\right| = \sum_j s_j(z_a)

and the inverse reads the same conditioner on x_a = z_a, so both directions cost one
conditioner pass. s is soft-clamped. The conditioner is an MLP whose last layer starts at zero,
so each coupling layer starts as the identity.

Conditional couplings (``context_dim=C``) feed the conditioner [z_a, c]: the part b is
transformed by a map that depends on the kept part and on the context, which changes neither
the triangular structure nor the log-det formula (Winkler et al. 2019, arXiv:1912.00042).
The spline coupling (``nfzoo.layers.spline``) shares this body with its own law.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, context_size, register_layer
from nfzoo.nets import MLP, hidden_units_list
from nfzoo.ops import batch_constant, soft_clamp, sum_event

__all__ = ["AdditiveCoupling", "AffineCoupling", "coupling_law", "coupling_mask"]


def coupling_mask(mask: str | Sequence[int], dim: int, flip: bool = False) -> np.ndarray:
    """Resolves a mask spec to a 0/1 vector of length ``dim`` (1 = passes through).

    "half": the first floor(dim/2) entries pass through; "alternating": even indices pass
    through; or an explicit 0/1 sequence. ``flip`` swaps the two parts. Both parts must be
    non-empty."""
    if isinstance(mask, str):
        if mask == "half":
            m = (np.arange(dim) < dim // 2).astype(np.int64)
        elif mask == "alternating":
            m = (np.arange(dim) % 2 == 0).astype(np.int64)
        else:
            raise ValueError(
                f"Coupling mask must be 'half', 'alternating' or a 0/1 sequence of length "
                f"{dim}; received {mask!r}."
            )
    else:
        m = np.asarray(mask, dtype=np.int64)
        if m.shape != (dim,) or not np.isin(m, (0, 1)).all():
            raise ValueError(
                f"Coupling mask must be a 0/1 sequence of length {dim}; received {list(mask)}."
            )
    if flip:
        m = 1 - m
    if m.sum() == 0 or m.sum() == dim:
        raise ValueError(
            f"Coupling mask must leave both parts non-empty; received {m.tolist()} for dim {dim}."
        )
    return m


def _as_range(index: np.ndarray) -> tuple[int, int] | None:
    """(start, stop) when ``index`` is the contiguous range start..stop-1, else None."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return int(index[0]), int(index[0] + len(index))
    return None


def coupling_law(
    b: tf.Tensor,
    t: tf.Tensor,
    s: tf.Tensor | None,
    inverse: bool,
    like: tf.Tensor,
    event_ndims: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The coupling update of the moved part b with shift t and log-scale s (None: additive):

        forward  b' = b * exp(s) + t,    log|det| = sum s      (additive: b + t, 0)
        inverse  b' = (b - t) * exp(-s), log|det| = -sum s     (additive: b - t, 0)

    summed over the trailing ``event_ndims`` axes (one value per example of ``like``). Shared by
    the vector and image couplings and by FactorOut's learned prior."""
    if s is None:
        return (b - t if inverse else b + t), batch_constant(0.0, like, event_ndims)
    if inverse:
        return (b - t) * tf.exp(-s), -sum_event(s, event_ndims)
    return b * tf.exp(s) + t, sum_event(s, event_ndims)


class _Coupling(BijectorLayer):
    """Shared body of the coupling layers: splitting, merging and the conditioner. A subclass
    sets ``params_per_dim`` and implements ``_law(b, h, inverse)``, the element-wise map of
    the moved part b given the conditioner's output h [N, len(b) * params_per_dim]."""

    #: conditioner outputs per transformed dimension (1: shift; 2: shift and log-scale)
    params_per_dim: int

    def __init__(
        self,
        mask: str | Sequence[int] = "half",
        flip: bool = False,
        hidden_units: Sequence[int] = (64, 64),
        activation: str = "relu",
        context_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask = mask if isinstance(mask, str) else [int(m) for m in mask]
        self.flip = bool(flip)
        self.hidden_units = hidden_units_list(hidden_units, type(self).__name__)
        self.activation = activation
        self.context_dim = context_size(context_dim, type(self).__name__)

    def _build_event(self, event_shape):
        (dim,) = event_shape
        m = coupling_mask(self.mask, dim, self.flip)
        self._keep = np.flatnonzero(m == 1).astype(np.int32)
        self._move = np.flatnonzero(m == 0).astype(np.int32)
        # Position of each coordinate in concat([kept, moved]): merges the parts back.
        self._merge = np.argsort(np.concatenate([self._keep, self._move])).astype(np.int32)
        # Half masks keep and move contiguous ranges: slices and one concat then do what the
        # gathers do, and XLA compiles them to copies instead of gathers (three per layer).
        self._ranges = _as_range(self._keep), _as_range(self._move)
        self.conditioner = MLP(
            output_dim=self.params_per_dim * len(self._move),
            hidden_units=self.hidden_units,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="conditioner",
        )
        self.conditioner.build((None, len(self._keep) + (self.context_dim or 0)))

    def _split(self, u):
        keep, move = self._ranges
        if keep is not None and move is not None:
            return u[..., keep[0] : keep[1]], u[..., move[0] : move[1]]
        return tf.gather(u, self._keep, axis=-1), tf.gather(u, self._move, axis=-1)

    def _merge_parts(self, a, b):
        keep, move = self._ranges
        if keep is not None and move is not None:
            return tf.concat([a, b] if keep[0] < move[0] else [b, a], axis=-1)
        return tf.gather(tf.concat([a, b], axis=-1), self._merge, axis=-1)

    def _conditioner_output(self, a, context):
        return self.conditioner(a if context is None else tf.concat([a, context], axis=-1))

    def _law(self, b, h, inverse: bool):
        """(b', log|det db'/db| per example) for the moved part b."""
        raise NotImplementedError

    def _transform(self, u, context, inverse: bool):
        a, b = self._split(u)
        b, log_det = self._law(b, self._conditioner_output(a, context), inverse)
        return self._merge_parts(a, b), log_det

    def _forward_and_log_det(self, z, context=None):
        return self._transform(z, context, inverse=False)

    def _inverse_and_log_det(self, x, context=None):
        return self._transform(x, context, inverse=True)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mask": self.mask,
            "flip": self.flip,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
            "context_dim": self.context_dim,
        }


@register_layer
class AdditiveCoupling(_Coupling):
    """NICE coupling: x_a = z_a, x_b = z_b + t(z_a); log|det dx/dz| = 0.

    Cost: one conditioner pass in either direction. Dinh et al. 2014, arXiv:1410.8516.
    The log-det is constant but the Jacobian is not (t depends on z_a), so TFP must not treat
    the map as affine: ``constant_jacobian`` stays False.

    Args:
      mask: "half", "alternating" or a 0/1 sequence (1 = passes through).
      flip: swap the two parts (alternate it between successive layers).
      hidden_units, activation: the MLP conditioner.
      context_dim: size C of a context read by the conditioner, t(z_a, c) (None: none).
    """

    params_per_dim = 1

    def _law(self, b, h, inverse):
        return coupling_law(b, h, None, inverse, b, 1)


@register_layer
class AffineCoupling(_Coupling):
    """RealNVP coupling: x_a = z_a, x_b = z_b * exp(s(z_a)) + t(z_a);
    log|det dx/dz| = sum s(z_a), with s soft-clamped to +-``log_scale_clamp``.

    Cost: one conditioner pass in either direction. Dinh et al. 2016, arXiv:1605.08803.

    Args: as ``AdditiveCoupling``, plus ``log_scale_clamp`` (None: unclamped).
    """

    params_per_dim = 2

    def __init__(self, *args, log_scale_clamp: float | None = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_scale_clamp = log_scale_clamp

    def _law(self, b, h, inverse):
        n = len(self._move)
        return coupling_law(
            b, h[..., :n], soft_clamp(h[..., n:], self.log_scale_clamp), inverse, b, 1
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "log_scale_clamp": self.log_scale_clamp}
