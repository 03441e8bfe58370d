"""BijectorLayer: one object that is a Keras 3 layer and a TensorFlow Probability bijector.

Direction convention (as in TFP): ``forward`` is the generative map g: z -> x (base side to
data side) and ``inverse`` is the normalizing map f: x -> z. A Keras call ``layer(z)`` runs
``forward``; ``layer(other_bijector)`` composes, exactly as ``tfb.Bijector.__call__`` does.

A subclass implements

* ``_build_event(event_shape)``: create weights for events of ``event_shape`` (the shape on
  the forward-input side, batch dimensions removed);
* ``_forward_and_log_det(z) -> (x, log|det dx/dz|)`` and
  ``_inverse_and_log_det(x) -> (z, log|det dz/dx|)``, the log-dets reduced over the event
  dimensions (one value per batch element). Computing the output and its log-det in one pass
  lets coupling and autoregressive layers evaluate their conditioner once. A layer whose
  inverse has no closed form leaves ``_inverse_and_log_det`` alone: the default raises a
  NotImplementedError that names the layer and the reason given in ``inverse_unavailable``;
* ``get_config``.

Both passes receive inputs with exactly one batch axis, ``[N, *event]``: the public methods fold
every batch shape (none, for a single event, as TFP allows; or several) into one axis and
unfold the results, so conditioner networks always see matrices.

Conditioning. A layer that reads a context vector c (conditional density estimation,
q(x | c)) is built with ``context_dim=C``; its two passes then take ``context`` [N, C] as a
keyword argument. Its public methods take ``context=`` (TFP routes it as a bijector keyword
argument), broadcast the batch shapes of the input and the context (TFP batch semantics: x
[B, D] with c [B, C], or one context [C] for every x), and refuse a missing context, or a
context given to a layer without ``context_dim``, with a ValueError.

TFP's ``_forward``, ``_inverse``, ``_forward_log_det_jacobian`` and
``_inverse_log_det_jacobian`` are derived from those two methods here, once. A subclass may
still override them where one half is cheaper on its own.

The clashes between the two parents are settled in this class and nowhere else (the private
TensorFlow, Keras and TFP hooks this takes are named in ``nfzoo._compat``):

* ``name``: tf.Module and Bijector expose a read-only ``name``; Keras assigns it. One
  read-write property stores it where both parents look (``_compat.set_module_name``).
* ``dtype``: Keras means the variable dtype (a string), TFP the dtype of the bijector's inputs
  (a ``tf.DType``). Both are the same thing for a flow layer, so ``dtype`` returns the Keras
  variable dtype as a ``tf.DType``.
* ``__call__``: tensors go to Keras (building the layer, autocasting, functional graphs);
  bijectors and distributions go to TFP (composition / transformation).
* equality and hashing: TFP compares bijectors by their constructor parameters, which would
  make two coupling layers with equal configs but different weights "equal" (and share a
  cache). Layers compare by identity, as Keras expects.
* variable tracking: Keras owns the weights; ``trainable_variables`` is Keras's list. For TFP
  code that walks tf.Module attributes (``TransformedDistribution.trainable_variables``,
  ``tfp.vi``), the underlying ``tf.Variable`` objects are also exposed to that walk
  (``_compat.expose_module_variables``).
* the bijector cache: TFP remembers results per input tensor, so after a weight update it
  would return a stale result for a tensor it has seen, and the cached result carries no
  gradient to the new weights. Layers have trainable weights, so the cache is off
  (``_compat.without_bijector_cache``): every call computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
import tensorflow_probability as tfp

from nfzoo import _compat
from nfzoo._types import TensorLike
from nfzoo.registry import Registry

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["LAYERS", "BijectorLayer", "context_size", "register_layer", "registered_layers"]

#: every registered BijectorLayer class, by class name (the name Keras serialises it under)
LAYERS: Registry[type[BijectorLayer]] = Registry("flow layer")


def register_layer(cls: type[BijectorLayer]) -> type[BijectorLayer]:
    """Registers a BijectorLayer subclass: Keras-serialisable in package "nfzoo", and listed
    in ``registered_layers()`` (which drives the layer contract test suite)."""
    if cls.__name__ in LAYERS:
        if LAYERS.get(cls.__name__) is not cls:
            raise ValueError(f"A layer named {cls.__name__!r} is already registered.")
        return cls
    cls = keras.saving.register_keras_serializable(package="nfzoo")(cls)
    LAYERS.add(cls.__name__, cls)
    return cls


def registered_layers() -> dict[str, type[BijectorLayer]]:
    """All registered BijectorLayer classes, by class name."""
    return dict(LAYERS.items())


class _Bijector(tfp.bijectors.Bijector):
    """TFP's Bijector with ``__call__`` routed to Keras's Operation.

    ``keras.layers.Layer.__call__`` ends with ``super().__call__(...)``, meant for
    ``keras.Operation.__call__``; in BijectorLayer's MRO the next ``__call__`` after the Keras
    classes would be TFP's. This shim sends it where Keras meant it to go."""

    def __call__(self, *args, **kwargs):
        return _compat.keras_operation_call(self, *args, **kwargs)


@_compat.without_bijector_cache
class BijectorLayer(keras.layers.Layer, _Bijector):
    """Base class of every nfzoo flow layer: a Keras 3 layer and a TFP bijector at once.

    Args:
      event_ndims: rank of one event (1 for vectors, 3 for images); defaults to the class
        attribute of the same name.
      name, dtype, trainable: as for ``keras.layers.Layer``. ``dtype`` is ``"float32"``
        (default) or ``"float64"``.
    """

    #: rank of one event on the forward-input side
    event_ndims: int = 1
    #: whether the Jacobian itself does not depend on the input, i.e. the map is affine
    #: (linear layers, permutations, ActNorm). TFP reads it as "affine" (``mean()`` becomes
    #: forward(base mean)), so a constant log-det alone (additive couplings) is not enough.
    constant_jacobian: bool = False
    #: why ``inverse`` is unavailable, for layers without an inverse (None: it exists)
    inverse_unavailable: str | None = None
    #: whether the layer initialises itself from the first batch of data (ActNorm)
    initializes_from_data: ClassVar[bool] = False
    #: size C of the context vector the layer reads (None: an unconditional layer); set by
    #: the constructors of conditional layers
    context_dim: int | None = None

    def __init__(
        self,
        *,
        event_ndims: int | None = None,
        name: str | None = None,
        dtype: Any = None,
        **kwargs,
    ):
        keras.layers.Layer.__init__(self, name=name, dtype=dtype, **kwargs)
        if event_ndims is not None:  # layers that take any event rank (ActNorm)
            self.event_ndims = int(event_ndims)
        check_float_policy(self.dtype_policy, type(self).__name__)
        # the second parent, TFP's Bijector, keeping Keras's name
        _compat.init_bijector(
            self,
            forward_min_event_ndims=self.event_ndims,
            is_constant_jacobian=self.constant_jacobian,
            name=self.name,
        )
        self._event_shape_in: tuple[int, ...] | None = None

    # ---- settling the two parents ------------------------------------------------------

    @property
    def name(self) -> str:
        return _compat.module_name(self)

    @name.setter
    def name(self, value: str) -> None:
        _compat.set_module_name(self, value)

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.dtype_policy.variable_dtype)

    def __call__(self, value, *args, **kwargs):
        if isinstance(value, tfb.Bijector | tfd.Distribution):
            return tfb.Bijector.__call__(self, value, *args, **kwargs)
        return keras.layers.Layer.__call__(self, value, *args, **kwargs)

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def _batch_shape(self, x_event_ndims):
        # A layer is one bijector, never a batch of them.
        return tf.TensorShape([])

    def _batch_shape_tensor(self, x_event_ndims):
        return tf.constant([], dtype=tf.int32)

    # ---- Keras role -------------------------------------------------------------------

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)
        if len(shape) < self.event_ndims:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= {self.event_ndims} "
                f"(batch dims + event of rank {self.event_ndims}); received shape {shape}."
            )
        event = shape[len(shape) - self.event_ndims :]
        event_shape = tuple(d for d in event if d is not None)
        if len(event_shape) != len(event):
            raise ValueError(
                f"{type(self).__name__} needs a fully known event shape; received {shape}."
            )
        self._event_shape_in = tuple(int(d) for d in event_shape)
        self._build_event(self._event_shape_in)
        # Plain tf.Variables for TFP code that walks tf.Module attributes (see module doc).
        _compat.expose_module_variables(self, self.weights)

    def _build_event(self, event_shape: tuple[int, ...]) -> None:
        """Creates the layer's weights for events of ``event_shape``. Default: none."""

    def call(self, inputs: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        return self.forward(inputs, context=context)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = tuple(input_shape)
        batch, event = (
            shape[: len(shape) - self.event_ndims],
            shape[len(shape) - self.event_ndims :],
        )
        return batch + tuple(self._forward_event_shape(tf.TensorShape(event)).as_list())

    @property
    def event_shape(self) -> tuple[int, ...] | None:
        """Event shape on the forward-input (base) side, known once the layer is built."""
        return self._event_shape_in

    @property
    def event_dim(self) -> int:
        """The size of the last event axis on the forward-input side (D of a vector layer);
        a ValueError before the layer is built."""
        if self._event_shape_in is None:
            raise ValueError(
                f"{type(self).__name__} ({self.name}) is not built: its event shape is known "
                "once it is built or called."
            )
        return self._event_shape_in[-1]

    @property
    def output_event_shape(self) -> tuple[int, ...] | None:
        """Event shape on the forward-output (data) side, known once the layer is built."""
        if self._event_shape_in is None:
            return None
        return tuple(self._forward_event_shape(tf.TensorShape(self._event_shape_in)).as_list())

    def add_weight_from_array(
        self, name: str, value: npt.ArrayLike, trainable: bool = True, dtype: Any = None
    ) -> keras.Variable:
        """A weight initialised to ``value``, for initial values computed in numpy (LU factors
        of a rotation, seeded draws). Its dtype is the layer's unless ``dtype`` is given."""
        value = np.asarray(value)
        w = self.add_weight(
            shape=value.shape, initializer="zeros", dtype=dtype, trainable=trainable, name=name
        )
        w.assign(value.astype(w.dtype))
        return w

    # ---- data-dependent initialisation ------------------------------------------------

    @property
    def is_data_initialized(self) -> bool:
        """Layers with data-dependent initialisation override this."""
        return True

    def data_initialize(self, x: tf.Tensor) -> None:
        """Initialises the layer from a batch ``x`` on its data (forward-output) side.

        Called eagerly by ``Flow.initialize`` before training; no-op by default."""

    def mark_data_initialized(self) -> None:
        """Keeps the current weights as the initialisation, for training without data
        (reverse KL), so that a later likelihood ``fit`` does not re-initialise the layer.
        No-op by default."""

    # ---- TFP role: public methods check their input once, then defer to TFP ----------

    def forward(
        self, x: TensorLike, name: str = "forward", context: TensorLike | None = None, **kwargs
    ) -> tf.Tensor:
        x = self._prepare(x, inverse=False)
        return super().forward(x, name=name, **self._context_kwargs(context), **kwargs)

    def inverse(
        self, y: TensorLike, name: str = "inverse", context: TensorLike | None = None, **kwargs
    ) -> tf.Tensor:
        y = self._prepare(y, inverse=True)
        return super().inverse(y, name=name, **self._context_kwargs(context), **kwargs)

    def forward_log_det_jacobian(
        self,
        x: TensorLike,
        event_ndims: int | None = None,
        name: str = "forward_log_det_jacobian",
        context: TensorLike | None = None,
        **kw,
    ) -> tf.Tensor:
        x = self._prepare(x, inverse=False)
        kw.update(self._context_kwargs(context))
        return super().forward_log_det_jacobian(x, event_ndims=event_ndims, name=name, **kw)

    def inverse_log_det_jacobian(
        self,
        y: TensorLike,
        event_ndims: int | None = None,
        name: str = "inverse_log_det_jacobian",
        context: TensorLike | None = None,
        **kw,
    ) -> tf.Tensor:
        y = self._prepare(y, inverse=True)
        kw.update(self._context_kwargs(context))
        return super().inverse_log_det_jacobian(y, event_ndims=event_ndims, name=name, **kw)

    def forward_and_log_det(
        self, z: TensorLike, context: TensorLike | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(x, log|det dx/dz|)`` in one pass; the log-det has the batch shape."""
        z = self._prepare(z, inverse=False)
        return self._batched_pass(z, self._context_kwargs(context).get("context"), False)

    def inverse_and_log_det(
        self, x: TensorLike, context: TensorLike | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(z, log|det dz/dx|)`` in one pass; the log-det has the batch shape."""
        x = self._prepare(x, inverse=True)
        return self._batched_pass(x, self._context_kwargs(context).get("context"), True)

    @property
    def is_conditional(self) -> bool:
        """Whether the layer reads a context (built with ``context_dim``)."""
        return self.context_dim is not None

    def folded_pass(
        self, u: tf.Tensor, context: tf.Tensor | None = None, inverse: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One pass on folded inputs (``[N, *event]``, context [N, C] or None): the internal
        entry point of chains (``nfzoo.chain``), which fold the batch once for all layers.
        An unconditional layer ignores ``context``."""
        # a conditional layer's passes take the context: their signature is the subclass's
        fn: Callable[..., tuple[tf.Tensor, tf.Tensor]] = (
            self._inverse_and_log_det if inverse else self._forward_and_log_det
        )
        if self.is_conditional:
            return fn(u, context=context)
        return fn(u)

    @property
    def has_inverse(self) -> bool:
        return self.inverse_unavailable is None

    @property
    def needs_data_init(self) -> bool:
        """Whether the layer, or a layer inside it, initialises from the first batch."""
        return self.initializes_from_data

    # ---- what subclasses implement ----------------------------------------------------

    def _forward_and_log_det(self, z):
        raise NotImplementedError(f"{type(self).__name__} does not implement its forward pass.")

    def _inverse_and_log_det(self, x):
        reason = self.inverse_unavailable or "it is not implemented"
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name}) has no inverse: {reason}. Use the forward "
            "direction (Flow.generate_and_log_prob) for sampling with densities."
        )

    def _batched_pass(self, u, context, inverse: bool):
        """``folded_pass`` on inputs of any batch shape: folds the (broadcast) batch axes of ``u``
        and ``context`` into one, runs the pass and unfolds its outputs."""
        folded, context, batch_shape = fold_batch(u, self.event_ndims, context)
        out, log_det = self.folded_pass(folded, context, inverse)
        return unfold_batch(out, batch_shape, self.event_ndims), unfold_batch(log_det, batch_shape)

    def _forward(self, x, context=None):
        return self._batched_pass(x, context, inverse=False)[0]

    def _inverse(self, y, context=None):
        return self._batched_pass(y, context, inverse=True)[0]

    def _forward_log_det_jacobian(self, x, context=None):
        return self._batched_pass(x, context, inverse=False)[1]

    def _inverse_log_det_jacobian(self, y, context=None):
        return self._batched_pass(y, context, inverse=True)[1]

    def _context_kwargs(self, context) -> dict:
        """``{"context": tensor}`` for a conditional layer, ``{}`` otherwise; refuses a missing
        context, an unexpected one, and a wrong context size or dtype."""
        who = f"{type(self).__name__} ({self.name})"
        return check_context(context, self.context_dim, self.dtype, who)

    # ---- input checking ---------------------------------------------------------------

    def _prepare(self, x, inverse: bool) -> tf.Tensor:
        """Converts ``x`` to a tensor of the layer's dtype, builds the layer on first use and
        checks the event shape. Raises ValueError naming what was expected and received."""
        x = as_float_tensor(x, self.dtype, who=type(self).__name__)
        if not self.built:
            if inverse:
                raise ValueError(
                    f"{type(self).__name__} ({self.name}) is not built: call it forward once "
                    "or build it with layer.build(input_shape) before using inverse."
                )
            with tf.init_scope():  # weights are created eagerly even when called in a graph
                self.build(tuple(x.shape))
        expected = self.output_event_shape if inverse else self._event_shape_in
        check_event_shape(x, expected, who=f"{type(self).__name__} ({self.name})")
        return x


def context_size(context_dim: int | np.integer | None, who: str) -> int | None:
    """``context_dim`` as an int >= 1, or None; a ValueError names anything else."""
    if context_dim is None:
        return None
    if isinstance(context_dim, bool) or not isinstance(context_dim, int | np.integer):
        raise ValueError(
            f"{who}: context_dim must be a positive integer or None; received {context_dim!r}."
        )
    if context_dim < 1:
        raise ValueError(f"{who}: context_dim must be >= 1; received {context_dim}.")
    return int(context_dim)


def check_float_policy(policy, who: str) -> None:
    """Refuses a dtype policy other than plain float32 or float64. Mixed precision
    ("mixed_float16", "mixed_bfloat16": float16 compute on float32 variables) is refused too:
    log-densities sum many log-dets and exp() of log-scales that overflow float16
    (max 65504) long before any flow is trained."""
    variable, compute = policy.variable_dtype, policy.compute_dtype
    if variable != compute or tf.as_dtype(variable) not in (tf.float32, tf.float64):
        raise ValueError(
            f"{who}: dtype must be 'float32' or 'float64' (mixed precision is not supported: "
            f"log-densities overflow float16); received the policy {policy.name!r} "
            f"(variables {variable}, compute {compute})."
        )


def check_context(context, context_dim: int | None, dtype: tf.DType, who: str) -> dict:
    """``{"context": tensor of dtype}`` when ``context_dim`` is set, ``{}`` when it is None;
    a ValueError names what is wrong otherwise (a missing or unexpected context, a context
    whose last axis is not ``context_dim``)."""
    if context_dim is None:
        if context is not None:
            raise ValueError(
                f"{who} is unconditional (built without context_dim) and takes no context; "
                f"received a context of shape {list(np.shape(context))}."
            )
        return {}
    if context is None:
        raise ValueError(
            f"{who} is conditional (context_dim={context_dim}) and needs context=, a tensor "
            f"of shape [batch..., {context_dim}]."
        )
    context = as_float_tensor(context, dtype, who=f"{who} (context)")
    if context.shape.rank == 0 or context.shape[-1] not in (None, context_dim):
        raise ValueError(
            f"{who} expects a context of shape [batch..., {context_dim}]; received shape "
            f"{context.shape.as_list() if context.shape.rank is not None else 'unknown'}."
        )
    return {"context": context}


def fold_batch(u: tf.Tensor, event_ndims: int, context: tf.Tensor | None = None):
    """(u as [N, *event], context as [N, C] or None, batch shape): the batch axes of ``u`` and
    of ``context`` are broadcast against each other (TFP batch semantics) and folded into one.

    The batch shape is a tuple of ints where it is known statically, else a 1-D tensor; where
    ``u`` already has one batch axis and no context needs broadcasting, nothing is reshaped.
    """
    event = u.shape[u.shape.rank - event_ndims :]
    batch = u.shape[: u.shape.rank - event_ndims]
    shape: Any  # a tuple of ints where known statically, else a 1-D tensor
    if context is not None:
        c_batch = context.shape[:-1]
        if batch.is_fully_defined() and c_batch.is_fully_defined():
            try:
                shape = tuple(np.broadcast_shapes(tuple(batch.as_list()), tuple(c_batch)))
            except ValueError:
                raise ValueError(
                    f"The batch shape of the input {batch.as_list()} and of the context "
                    f"{c_batch.as_list()} do not broadcast (input shape {u.shape.as_list()}, "
                    f"context shape {context.shape.as_list()})."
                ) from None
        else:
            shape = tf.broadcast_dynamic_shape(
                tf.shape(u)[: tf.rank(u) - event_ndims], tf.shape(context)[:-1]
            )
        if not (isinstance(shape, tuple) and shape == tuple(batch) == tuple(c_batch)):
            u = tf.broadcast_to(u, tf.concat([shape, event.as_list()], 0))
            context = tf.broadcast_to(context, tf.concat([shape, context.shape[-1:]], 0))
    else:
        shape = tuple(batch.as_list()) if batch.is_fully_defined() else None
        if shape is None:
            shape = tf.shape(u)[: tf.rank(u) - event_ndims]
    if len(batch) == 1 and (context is None or context.shape.rank == 2):
        return u, context, shape  # already one batch axis
    u = tf.reshape(u, [-1, *event.as_list()])
    if context is not None:
        context = tf.reshape(context, [-1, context.shape[-1]])
    return u, context, shape


def unfold_batch(t: tf.Tensor, batch_shape, event_ndims: int = 0) -> tf.Tensor:
    """Undoes ``fold_batch`` on an output ``t`` of shape [N, *event] (``event_ndims`` trailing
    axes; 0 for a log-det)."""
    if isinstance(batch_shape, tuple):
        if len(batch_shape) == 1 and t.shape.rank == event_ndims + 1:
            return t
        event = t.shape[t.shape.rank - event_ndims :].as_list()
        return tf.reshape(t, [*batch_shape, *event])
    event = tf.shape(t)[tf.rank(t) - event_ndims :]
    return tf.reshape(t, tf.concat([batch_shape, event], 0))


def as_float_tensor(x, dtype: tf.DType, who: str) -> tf.Tensor:
    """Converts ``x`` to a floating tensor of ``dtype``. Other floating dtypes are cast (as
    Keras autocasts); integer, boolean, string and complex inputs raise ValueError."""
    if hasattr(x, "dtype"):  # tensors, variables, numpy arrays and scalars
        in_dtype = tf.as_dtype(x.dtype)
    else:  # Python numbers and nested lists carry no dtype: take the layer's
        x = np.asarray(x, dtype=dtype.as_numpy_dtype)
        in_dtype = dtype
    if not in_dtype.is_floating:
        raise ValueError(
            f"{who} expects a floating-point input ({dtype.name}); received dtype {in_dtype.name}."
        )
    x = tf.convert_to_tensor(x)
    if x.dtype != dtype:
        x = tf.cast(x, dtype)
    return x


def check_event_shape(x: tf.Tensor, expected: tuple[int, ...] | None, who: str) -> None:
    """Raises ValueError unless the trailing dimensions of ``x`` equal ``expected``."""
    if expected is None:
        return
    shape = x.shape
    k = len(expected)
    if shape.rank is None:
        return
    received = tuple(shape.as_list())
    if shape.rank < k or any(
        d is not None and d != e for d, e in zip(received[shape.rank - k :], expected)
    ):
        raise ValueError(
            f"{who} expects inputs of shape [batch..., {', '.join(map(str, expected))}] "
            f"(event shape {expected}); received shape {received}."
        )
