"""Flow: a base distribution plus an ordered list of BijectorLayers, as a Keras 3 model.

Layer order is generative: base noise z passes through ``layers[0]`` first and
``layers[-1]`` produces the data x, as in a Keras Sequential model whose layers run
``forward``. With g_k the forward map of ``layers[k]``:

    x = g_{K-1}(... g_0(z)),   z ~ p(z) (standard normal by default)
    log q(x) = log p(z) + sum_k log|det d g_k^{-1} / d h_{k+1}|    (inverse pass, x -> z)
    log q(x) = log p(z) - sum_k log|det d g_k / d h_k|            (forward pass, z -> x)

``flow.bijector`` is the equivalent ``tfb.Chain(layers[::-1])`` and ``flow.distribution`` the
``tfd.TransformedDistribution`` of the base through it.

Training: ``flow.fit(x)`` minimises the negative log-likelihood (forward KL to the data); no
loss argument is needed and ``compile`` defaults to Adam with ``jit_compile=True`` and gradients
clipped to a global norm of ``DEFAULT_GLOBAL_CLIPNORM`` (a guard against the rare finite but
enormous gradient of one badly modelled example, see ``Flow.compile``). ``fit``
compiles with the defaults if ``compile`` was not called, and initialises data-dependent layers
(ActNorm) from the first batch before the first step. ``evaluate`` reports the NLL in nats per
example (``loss``) and, after ``compile(bits_per_dim=True)``, bits per dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nfzoo.bijector_layer import BijectorLayer, as_float_tensor, check_event_shape
from nfzoo.chain import build_chain, chain_forward, chain_inverse, initialize_chain
from nfzoo.trainable import TrainableModel

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["DEFAULT_GLOBAL_CLIPNORM", "Flow"]

#: examples used for data-dependent initialisation when ``fit`` gets arrays
INIT_BATCH = 1024

#: global gradient-norm clip of the default Adam (``Flow.compile``). Gradient norms of the mean
#: NLL are O(1-20) in normal training; one example that the flow maps far into the base tail
#: (z ~ 800: NLL ~ 3e5 nats) gives 1e4-1e6 times that. Adam answers such a spike with a step
#: of ~3 learning rates on every coordinate it touches, kept going by its momentum whatever
#: the next gradients say, which can cascade into further spikes, float32 overflow of Adam's
#: second moment and NaN weights (glow-1d on checkerboard, step 1973). Clipping keeps the
#: spike's direction at a normal size; an ordinary step is at most mildly rescaled, to which
#: Adam, normalising each coordinate by its gradient history, is insensitive.
DEFAULT_GLOBAL_CLIPNORM = 10.0

BASES = ("normal",)


@keras.saving.register_keras_serializable(package="nfzoo")
class Flow(TrainableModel):
    """A normalizing flow: ``log_prob``, ``sample``, ``generate``, ``encode`` and training by
    maximum likelihood through Keras ``fit``.

    Args:
      layers: BijectorLayers in generative order (``layers[0]`` acts on the base noise).
      event_shape: shape of one data point, e.g. ``(2,)``.
      base: the base distribution; "normal" is the standard normal
        ``tfd.Independent(tfd.Normal(0, 1))`` over the base event shape.
      name, dtype: as for ``keras.Model``; every layer must have the flow's dtype.
    """

    objective = "the negative log-likelihood (use nfzoo.vi.ReverseKL for other objectives)"

    def __init__(
        self,
        layers: Sequence[BijectorLayer],
        event_shape: Sequence[int],
        base: str = "normal",
        name: str | None = None,
        dtype: Any = None,
        **kwargs,
    ):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if base not in BASES:
            raise ValueError(f"Flow base must be one of {BASES}; received {base!r}.")
        layers = list(layers)
        if not layers:
            raise ValueError("Flow needs at least one layer; received an empty list.")
        for i, layer in enumerate(layers):
            if not isinstance(layer, BijectorLayer):
                raise ValueError(
                    f"Flow layers must be nfzoo BijectorLayers; layer {i} is "
                    f"{type(layer).__name__}."
                )
            if layer.dtype != tf.as_dtype(self.dtype_policy.variable_dtype):
                raise ValueError(
                    f"Flow has dtype {self.dtype_policy.variable_dtype} but layer {i} "
                    f"({layer.name}) has dtype {layer.dtype.name}; build both with the same dtype."
                )
        self.data_event_shape = tuple(int(d) for d in event_shape)
        self.base = base
        self.flow_layers = layers
        self._bits_per_dim_enabled = False
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        self.build((None, *self.data_event_shape))

    def build(self, input_shape):
        self.base_event_shape = build_chain(self.flow_layers, tuple(input_shape)[1:])

    # ---- distributions and bijector views -------------------------------------------

    @property
    def event_size(self) -> int:
        """Number of dimensions of one data point (for bits per dimension)."""
        return int(np.prod(self.data_event_shape))

    @property
    def base_distribution(self) -> tfd.Distribution:
        """The base distribution p(z). Built on each access, so that no eager constant is
        captured by compiled or exported graphs."""
        dtype = self.compute_dtype
        loc = tf.zeros(self.base_event_shape, dtype=dtype)
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=tf.ones_like(loc)),
            reinterpreted_batch_ndims=len(self.base_event_shape),
        )

    @property
    def bijector(self) -> tfb.Bijector:
        """The flow as one TFP bijector: ``tfb.Chain(layers[::-1])`` (forward: z -> x)."""
        return tfb.Chain(list(reversed(self.flow_layers)), name=f"{self.name}_chain")

    @property
    def distribution(self) -> tfd.Distribution:
        """The flow as a ``tfd.TransformedDistribution`` of the base through ``bijector``."""
        return tfd.TransformedDistribution(self.base_distribution, self.bijector)

    @property
    def has_inverse(self) -> bool:
        """Whether every layer has an inverse (needed by ``log_prob`` and ``encode``)."""
        return all(layer.has_inverse for layer in self.flow_layers)

    # ---- public API ------------------------------------------------------------------

    def log_prob(self, x) -> tf.Tensor:
        """log q(x) for a batch of data points ``x`` of shape [batch..., *event_shape]."""
        return self._log_prob(self._data(x))

    def encode(self, x) -> tf.Tensor:
        """z = f(x), the normalizing direction (needs every layer's inverse)."""
        return self._inverse_pass(self._data(x))[0]

    def generate(self, z) -> tf.Tensor:
        """x = g(z), the generative direction: deterministic given the noise ``z``."""
        return self._forward_pass(self._noise(z))[0]

    def generate_and_log_prob(self, z) -> tuple[tf.Tensor, tf.Tensor]:
        """(x, log q(x)) with x = g(z), in one forward pass. Works for flows without inverse
        (planar, Sylvester): log q(x) = log p(z) - log|det dx/dz|."""
        z = self._noise(z)
        x, fldj = self._forward_pass(z)
        return x, self.base_distribution.log_prob(z) - fldj

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> tf.Tensor:
        """``n`` samples x = g(T z), z ~ p(z). An integer ``seed`` makes them reproducible.

        ``temperature`` T scales the base noise (Glow's reduced-temperature sampling, Kingma &
        Dhariwal 2018, section 5): T < 1 trades diversity for typical, cleaner samples; in a
        multi-scale flow every scale's noise is scaled alike."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"sample expects a non-negative integer n; received {n!r}.")
        if isinstance(temperature, bool) or not (
            isinstance(temperature, int | float | np.floating) and temperature > 0
        ):
            raise ValueError(f"sample expects a temperature > 0; received {temperature!r}.")
        if seed is not None:
            seed = (int(seed), 0)  # a stateless seed: same samples on every call
        z = self.base_distribution.sample(int(n), seed=seed)
        if temperature != 1.0:
            z = z * tf.cast(temperature, z.dtype)
        return self._forward_pass(z)[0]

    def call(self, inputs, training=None):
        """Keras entry point: log q(x), so ``flow(x)`` and ``predict`` return log-densities."""
        return self._log_prob(self._data(inputs))

    # ---- passes ----------------------------------------------------------------------

    def _log_prob(self, x):
        z, ildj = self._inverse_pass(x)
        return self.base_distribution.log_prob(z) + ildj

    def _inverse_pass(self, x):
        """x -> z through the layers in reverse order; returns (z, sum of log|det dz/dx|)."""
        return chain_inverse(self.flow_layers, x)

    def _forward_pass(self, z):
        """z -> x through the layers in order; returns (x, sum of log|det dx/dz|)."""
        return chain_forward(self.flow_layers, z)

    def _data(self, x):
        x = as_float_tensor(x, tf.as_dtype(self.compute_dtype), who=f"Flow {self.name!r}")
        check_event_shape(x, self.data_event_shape, who=f"Flow {self.name!r} (data side)")
        return x

    def _noise(self, z):
        z = as_float_tensor(z, tf.as_dtype(self.compute_dtype), who=f"Flow {self.name!r}")
        check_event_shape(z, self.base_event_shape, who=f"Flow {self.name!r} (noise side)")
        return z

    # ---- training --------------------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "adam",
        learning_rate: float | None = None,
        bits_per_dim: bool = False,
        global_clipnorm: float | None = DEFAULT_GLOBAL_CLIPNORM,
        **kwargs,
    ):
        """``TrainableModel.compile`` (Adam, ``jit_compile=True``, 10 steps per call of the
        compiled function, no loss: the loss is the negative log-likelihood), with gradients
        clipped by global norm by default.

        Args:
          learning_rate: sets Adam's learning rate when ``optimizer`` is "adam".
          bits_per_dim: also report NLL / (D log 2) as the metric ``bits_per_dim``.
          global_clipnorm: when ``optimizer`` is "adam", rescale each step's gradients to at
            most this global norm (None: no clipping). An optimizer instance keeps its own
            settings. See ``DEFAULT_GLOBAL_CLIPNORM`` for why flows clip by default.
        """
        self._bits_per_dim_enabled = bool(bits_per_dim)
        super().compile(optimizer, learning_rate, global_clipnorm=global_clipnorm, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if not config:  # not compiled
            return config
        return {**config, "bits_per_dim": self._bits_per_dim_enabled}

    def compile_from_config(self, config):
        # Keras skips models whose compile() is overridden; this one restores its own.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # y_pred is log q(x) (from ``call``); the loss is the mean negative log-likelihood.
        if sample_weight is None:
            nll = -tf.reduce_mean(y_pred)
        else:
            w = tf.cast(sample_weight, y_pred.dtype)
            nll = -tf.reduce_sum(w * y_pred) / tf.reduce_sum(w)
        if self._bits_per_dim_enabled:
            # weighted by examples, as Keras weights its loss tracker
            self.bits_per_dim_tracker.update_state(
                nll / (self.event_size * np.log(2.0)), sample_weight=tf.size(y_pred)
            )
        losses = self.losses
        return nll + tf.add_n(losses) if losses else nll

    @property
    def metrics(self):
        metrics = super().metrics
        if not self._bits_per_dim_enabled:
            metrics = [m for m in metrics if m is not self.bits_per_dim_tracker]
        return metrics

    def train_step(self, data):
        return _shape_logs_for_multi_worker(super().train_step(data))

    def test_step(self, data):
        return _shape_logs_for_multi_worker(super().test_step(data))

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit`` by negative log-likelihood; compiles with the defaults if needed
        and initialises data-dependent layers from the first batch."""
        if not self.is_initialized and x is not None:
            self.initialize(_first_batch(x, kwargs.get("batch_size")))
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a pipeline shuffles itself (Keras would warn)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """``keras.Model.evaluate``: the NLL in nats per example (compiles with the defaults
        if needed, so a loaded flow evaluates at once)."""
        if not self.compiled:
            self.compile()
        return super().evaluate(x, *args, **kwargs)

    @property
    def is_initialized(self) -> bool:
        """Whether every layer with data-dependent initialisation has been initialised."""
        return all(layer.is_data_initialized for layer in self.flow_layers)

    def initialize(self, x) -> None:
        """Initialises data-dependent layers (ActNorm) from a batch of data ``x``, running the
        inverse pass from the data side up to the last such layer."""
        initialize_chain(self.flow_layers, self._data(x))

    # ---- serialisation ----------------------------------------------------------------

    def save_pretrained(self, directory, **kwargs):
        """Writes config.json, model.weights.h5 and card.md into ``directory`` (atomically);
        ``nfzoo.load(directory)`` reads it back. See ``nfzoo.pretrained.save_pretrained``."""
        from nfzoo.pretrained import save_pretrained

        return save_pretrained(self, directory, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "event_shape": list(self.data_event_shape),
            "base": self.base,
            "layers": [keras.saving.serialize_keras_object(layer) for layer in self.flow_layers],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layers = [
            keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
            for c in config.pop("layers")
        ]
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(layers=layers, **config)


def _shape_logs_for_multi_worker(logs):
    """Keras 3 reduces each replica's logs with ``strategy.reduce("MEAN", v, axis=0)`` under
    multi-worker training, which fails on scalars ("Invalid reduction dimension 0 for input
    with 0 dimensions", tensorflow/tensorflow#72388). Giving the scalars a length-1 axis
    there makes that reduction the mean over replicas; elsewhere logs stay scalars."""
    strategy = tf.distribute.get_strategy()
    if not (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    ):
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}


def _first_batch(x, batch_size: int | None):
    """The first batch of ``x`` (array, tensor or tf.data.Dataset), for initialisation."""
    if isinstance(x, tf.data.Dataset):
        batch = next(iter(x.take(1)))
        while isinstance(batch, tuple | list):
            batch = batch[0]
        return batch
    return x[: max(batch_size or 0, INIT_BATCH)]
