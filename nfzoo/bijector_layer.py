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

TFP's ``_forward``, ``_inverse``, ``_forward_log_det_jacobian`` and
``_inverse_log_det_jacobian`` are derived from those two methods here, once. A subclass may
still override them where one half is cheaper on its own.

The clashes between the two parents are settled in this class and nowhere else:

* ``name``: tf.Module and Bijector expose a read-only ``name``; Keras assigns it. One
  read-write property stores it where both parents look (``_name``).
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
  ``tfp.vi``), the underlying ``tf.Variable`` objects are also exposed through the attribute
  ``_tf_module_variables``.
* the bijector cache: TFP remembers results per input tensor, so after a weight update it
  would return a stale result for a tensor it has seen, and the cached result carries no
  gradient to the new weights. Layers have trainable weights, so the cache is off: every call
  computes.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["BijectorLayer", "register_layer", "registered_layers"]

_LAYER_REGISTRY: dict[str, type[BijectorLayer]] = {}


def register_layer(cls: type[BijectorLayer]) -> type[BijectorLayer]:
    """Registers a BijectorLayer subclass: Keras-serialisable in package "nfzoo", and listed
    in ``registered_layers()`` (which drives the layer contract test suite)."""
    if cls.__name__ in _LAYER_REGISTRY and _LAYER_REGISTRY[cls.__name__] is not cls:
        raise ValueError(f"A layer named {cls.__name__!r} is already registered.")
    cls = keras.saving.register_keras_serializable(package="nfzoo")(cls)
    _LAYER_REGISTRY[cls.__name__] = cls
    return cls


def registered_layers() -> dict[str, type[BijectorLayer]]:
    """All registered BijectorLayer classes, by class name."""
    return dict(_LAYER_REGISTRY)


class _NoCache:
    """Stands in for TFP's BijectorCache and remembers nothing (see the module docstring)."""

    def __init__(self, bijector=None):
        self._bijector = bijector

    def __get__(self, bijector, bijector_class=None):
        return _NoCache(bijector)

    def forward(self, x, **kwargs):
        return self._bijector._forward(x, **kwargs)

    def inverse(self, y, **kwargs):
        return self._bijector._inverse(y, **kwargs)

    def forward_attributes(self, x, **kwargs):
        return {}

    def inverse_attributes(self, y, **kwargs):
        return {}


class _Bijector(tfb.Bijector):
    """TFP's Bijector with ``__call__`` routed to Keras's Operation.

    ``keras.layers.Layer.__call__`` ends with ``super().__call__(...)``, meant for
    ``keras.Operation.__call__``; in BijectorLayer's MRO the next ``__call__`` after the Keras
    classes would be TFP's. This shim sends it where Keras meant it to go."""

    def __call__(self, *args, **kwargs):
        return keras.Operation.__call__(self, *args, **kwargs)


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
    #: whether log|det J| does not depend on the input (linear layers, permutations)
    constant_jacobian: bool = False
    #: why ``inverse`` is unavailable, for layers without an inverse (None: it exists)
    inverse_unavailable: str | None = None
    #: whether the layer initialises itself from the first batch of data (ActNorm)
    needs_data_init: bool = False

    _cache = _NoCache()

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
        if tf.as_dtype(self.dtype_policy.variable_dtype) not in (tf.float32, tf.float64):
            raise ValueError(
                f"{type(self).__name__}: dtype must be float32 or float64; "
                f"received {self.dtype_policy.variable_dtype!r}."
            )
        keras_name = self.name
        tfb.Bijector.__init__(
            self,
            forward_min_event_ndims=self.event_ndims,
            is_constant_jacobian=self.constant_jacobian,
            validate_args=False,
            dtype=None,
            parameters={},
            name=keras_name,
        )
        # Bijector rewrites the name from the enclosing name scope; Keras's name is kept.
        self._name = keras_name
        self._event_shape_in: tuple[int, ...] | None = None

    # ---- settling the two parents ------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

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

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) < self.event_ndims:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= {self.event_ndims} "
                f"(batch dims + event of rank {self.event_ndims}); received shape {shape}."
            )
        event_shape = tuple(shape[len(shape) - self.event_ndims :])
        if any(d is None for d in event_shape):
            raise ValueError(
                f"{type(self).__name__} needs a fully known event shape; received {shape}."
            )
        self._event_shape_in = tuple(int(d) for d in event_shape)
        self._build_event(self._event_shape_in)
        # Plain tf.Variables for TFP code that walks tf.Module attributes (see module doc).
        self._tf_module_variables = [v.value for v in self.weights]

    def _build_event(self, event_shape: tuple[int, ...]) -> None:
        """Creates the layer's weights for events of ``event_shape``. Default: none."""

    def call(self, inputs):
        return self.forward(inputs)

    def compute_output_shape(self, input_shape):
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
    def output_event_shape(self) -> tuple[int, ...] | None:
        """Event shape on the forward-output (data) side, known once the layer is built."""
        if self._event_shape_in is None:
            return None
        return tuple(self._forward_event_shape(tf.TensorShape(self._event_shape_in)).as_list())

    def add_weight_from_array(
        self, name: str, value, trainable: bool = True, dtype: Any = None
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

    def forward(self, x, name: str = "forward", **kwargs):
        return super().forward(self._prepare(x, inverse=False), name=name, **kwargs)

    def inverse(self, y, name: str = "inverse", **kwargs):
        return super().inverse(self._prepare(y, inverse=True), name=name, **kwargs)

    def forward_log_det_jacobian(self, x, event_ndims=None, name="forward_log_det_jacobian", **kw):
        x = self._prepare(x, inverse=False)
        return super().forward_log_det_jacobian(x, event_ndims=event_ndims, name=name, **kw)

    def inverse_log_det_jacobian(self, y, event_ndims=None, name="inverse_log_det_jacobian", **kw):
        y = self._prepare(y, inverse=True)
        return super().inverse_log_det_jacobian(y, event_ndims=event_ndims, name=name, **kw)

    def forward_and_log_det(self, z) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(x, log|det dx/dz|)`` in one pass; the log-det has the batch shape."""
        return self._forward_and_log_det(self._prepare(z, inverse=False))

    def inverse_and_log_det(self, x) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(z, log|det dz/dx|)`` in one pass; the log-det has the batch shape."""
        return self._inverse_and_log_det(self._prepare(x, inverse=True))

    @property
    def has_inverse(self) -> bool:
        return self.inverse_unavailable is None

    # ---- what subclasses implement ----------------------------------------------------

    def _forward_and_log_det(self, z):
        raise NotImplementedError(f"{type(self).__name__} does not implement its forward pass.")

    def _inverse_and_log_det(self, x):
        reason = self.inverse_unavailable or "it is not implemented"
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name}) has no inverse: {reason}. Use the forward "
            "direction (Flow.generate_and_log_prob) for sampling with densities."
        )

    def _forward(self, x):
        return self._forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _forward_log_det_jacobian(self, x):
        return self._forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        return self._inverse_and_log_det(y)[1]

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
