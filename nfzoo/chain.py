"""Chains of BijectorLayers in generative order: building them from the data shape, the two
passes, data-dependent initialisation, and the chain as one TFP bijector. The one
implementation, used by ``Flow`` and by layers that hold layers (``FactorOut``).

The passes take folded inputs ([N, *event], context [N, C] or None, see
``BijectorLayer.folded_pass``) and hand the context to the conditional layers only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from nfzoo import _compat
from nfzoo.bijector_layer import BijectorLayer

__all__ = [
    "ContextChain",
    "build_chain",
    "chain_context_dim",
    "chain_forward",
    "chain_inverse",
    "initialize_chain",
]


def build_chain(
    layers: Sequence[BijectorLayer], data_event_shape: Sequence[int | None]
) -> tuple[int, ...]:
    """Builds ``layers`` (generative order) for data events of ``data_event_shape``, walking
    from the data side: each layer is built on its forward-input shape, the inverse image of
    the shape after it. Returns the base-side event shape."""
    shape = tf.TensorShape(tuple(data_event_shape))
    for layer in reversed(layers):
        shape = layer.inverse_event_shape(shape)
        if not layer.built:
            layer.build((None, *shape.as_list()))
    return tuple(shape.as_list())


def chain_context_dim(layers: Sequence[BijectorLayer], who: str) -> int | None:
    """The context size C that the conditional layers of ``layers`` share (None when no layer
    is conditional); a ValueError when they disagree."""
    sizes = {layer.context_dim for layer in layers if layer.context_dim is not None}
    if len(sizes) > 1:
        raise ValueError(
            f"{who}: the conditional layers must share one context size; received "
            f"context_dim {sorted(sizes)}."
        )
    return sizes.pop() if sizes else None


def chain_forward(
    layers: Sequence[BijectorLayer], z: tf.Tensor, context: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor | float]:
    """z -> x through ``layers`` in order; returns (x, sum of log|det dx/dz|), the sum the
    Python float 0.0 for no layer."""
    total = 0.0
    for layer in layers:
        z, ldj = layer.folded_pass(z, context, inverse=False)
        total = total + ldj
    return z, total


def chain_inverse(
    layers: Sequence[BijectorLayer], x: tf.Tensor, context: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor | float]:
    """x -> z through ``layers`` in reverse order; returns (z, sum of log|det dz/dx|), the sum
    the Python float 0.0 for no layer."""
    total = 0.0
    for layer in reversed(layers):
        x, ldj = layer.folded_pass(x, context, inverse=True)
        total = total + ldj
    return x, total


def initialize_chain(
    layers: Sequence[BijectorLayer], x: tf.Tensor, context: tf.Tensor | None = None
) -> None:
    """Initialises the data-dependent layers of ``layers`` (ActNorm) from a batch ``x`` on the
    data side, running the inverse pass from the data side up to the last such layer."""
    pending = [layer.needs_data_init for layer in layers]
    for i in reversed(range(len(layers))):
        if not any(pending[: i + 1]):
            break
        layer = layers[i]
        if layer.needs_data_init and not layer.is_data_initialized:
            layer.data_initialize(x)
        x = layer.folded_pass(x, context, inverse=True)[0]


@_compat.without_bijector_cache
class ContextChain(tfp.bijectors.Chain):
    """``tfb.Chain`` whose keyword argument ``context`` reaches every conditional layer.

    TFP's Chain routes keyword arguments by bijector name (``bijector_kwargs={"name":
    {...}}``); a conditional flow's layers all read the same context, so this chain takes
    it once: ``chain.forward(z, context=c)``, and through a TransformedDistribution
    ``dist.log_prob(x, bijector_kwargs={"context": c})``. Other keyword arguments are
    routed by name, as in TFP. Like the layers, it keeps no cache (their weights change
    during training). ``context_transform`` (the flow's check and standardisation of the
    context) is applied to the context first."""

    def __init__(
        self,
        bijectors: Sequence[tfp.bijectors.Bijector],
        context_transform: Callable[[tf.Tensor], tf.Tensor] | None = None,
        **kwargs,
    ):
        super().__init__(bijectors, **kwargs)
        self._context_transform = context_transform

    def _route(self, kwargs: dict):
        context = kwargs.get("context")
        if context is not None and self._context_transform is not None:
            context = self._context_transform(context)

        def of(bijector) -> dict:
            own = dict(kwargs.get(bijector.name, {}))
            if context is not None and getattr(bijector, "context_dim", None) is not None:
                own["context"] = context
            return own

        return of

    def _walk_forward(self, step_fn, x, **kwargs):
        of = self._route(kwargs)
        for bijector in reversed(self.bijectors):
            x = step_fn(bijector, x, **of(bijector))
        return x

    def _walk_inverse(self, step_fn, y, **kwargs):
        of = self._route(kwargs)
        for bijector in self.bijectors:
            y = step_fn(bijector, y, **of(bijector))
        return y
