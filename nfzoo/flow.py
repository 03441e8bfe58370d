r"""Flow: a base distribution plus an ordered list of BijectorLayers, as a Keras 3 model.

Layer order is generative: base noise z passes through ``layers[0]`` first and
``layers[-1]`` produces the data x, as in a Keras Sequential model whose layers run
``forward``. With g_k the forward map of ``layers[k]``, its input h_k (h_0 = z) and its
output h_{k+1} = g_k(h_k) (h_K = x), the change of variables through the normalizing map
f = g^{-1}, z = f(x), gives the density:

    x = g(z) = g_{K-1}(... g_0(z)),   z ~ p(z) = N(0, I)
    log q(x) = log p(f(x)) + log|det df/dx|
             = log p(z) + sum_k log|det d g_k^{-1} / d h_{k+1}|    (inverse pass, x -> z)
             = log p(z) - sum_k log|det d g_k / d h_k|            (forward pass, z -> x)

.. math::

    x &= g(z) = g_{K-1} \circ \cdots \circ g_0(z), \qquad z \sim p(z) = \mathcal{N}(0, I) \\
    \log q(x) &= \log p(f(x)) + \log\left|\det\frac{\partial f(x)}{\partial x}\right| \\
        &= \log p(z) + \sum_k \log\left|\det\frac{\partial g_k^{-1}}{\partial h_{k+1}}\right|
        \qquad \text{(inverse pass, } x \to z \text{)} \\
        &= \log p(z) - \sum_k \log\left|\det\frac{\partial g_k}{\partial h_k}\right|
        \qquad \text{(forward pass, } z \to x \text{)}

``flow.bijector`` is the equivalent ``tfb.Chain(layers[::-1])`` and ``flow.distribution`` the
``tfd.TransformedDistribution`` of the base through it.

Conditional flows, q(x | c): a flow whose layers are built with ``context_dim=C`` (e.g.
``nfzoo.build("maf", 2, context_dim=3)``) takes ``context=`` in every method. Shapes follow
TFP's batch semantics: the batch shapes of the data (or noise) and of the context broadcast,
so x [B, D] with c [B, C] gives ``log_prob`` [B], one context [C] serves any batch of x, and
``sample(n, context=c)`` with c [B, C] gives [n, B, D] (n draws for each context; [n, D]
for one context [C]). ``flow.distribution`` takes the context through TFP's route,
``dist.log_prob(x, bijector_kwargs={"context": c})``. ``fit`` trains on (data, context)
pairs: ``flow.fit(x, c)``, or a ``tf.data`` pipeline of ``(x, c)`` or ``(x, c, weight)``.
An unconditional flow is the case without context (``flow.context_dim`` is None).

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

from nfzoo import _compat
from nfzoo._types import TensorLike
from nfzoo.bijector_layer import (
    BijectorLayer,
    as_float_tensor,
    check_context,
    check_event_shape,
    check_float_policy,
    fold_batch,
    unfold_batch,
)
from nfzoo.chain import (
    ContextChain,
    build_chain,
    chain_context_dim,
    chain_forward,
    chain_inverse,
    initialize_chain,
)
from nfzoo.model_base import PretrainedModel
from nfzoo.ops import check_seed, in_row_blocks, standard_normal

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["DEFAULT_GLOBAL_CLIPNORM", "Flow", "NonFiniteLossError"]


class NonFiniteLossError(ValueError):
    """``fit`` met a step whose loss or gradients were not finite (NaN or inf): training
    stopped there and the model kept the weights of the last finite step."""


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


@keras.saving.register_keras_serializable(package="nfzoo")
class Flow(PretrainedModel):
    """A normalizing flow: ``log_prob``, ``sample``, ``generate``, ``encode`` and training by
    maximum likelihood through Keras ``fit``.

    Args:
      layers: BijectorLayers in generative order (``layers[0]`` acts on the base noise).
      event_shape: shape of one data point, e.g. ``(2,)``.
      standardize_context: for a conditional flow, standardise the context to zero mean and
        unit variance per coordinate (statistics taken from the first batch ``fit`` sees).
      name, dtype: as for ``keras.Model``; every layer must have the flow's dtype.
    """

    objective = "the negative log-likelihood (use nfzoo.vi.ReverseKL for other objectives)"
    pretrained_key = "flow"

    def __init__(
        self,
        layers: Sequence[BijectorLayer],
        event_shape: Sequence[int],
        standardize_context: bool = True,
        name: str | None = None,
        dtype: Any = None,
        **kwargs,
    ):
        super().__init__(name=name, dtype=dtype, **kwargs)
        check_float_policy(self.dtype_policy, f"Flow {self.name!r}")
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
        self.flow_layers = layers
        #: size C of the context of a conditional flow, q(x | c); None for q(x)
        self.context_dim = chain_context_dim(layers, who=f"Flow {self.name!r}")
        self.standardize_context = bool(standardize_context)
        if self.context_dim is not None:
            # c -> (c - shift) / scale before any layer sees it: set from the first batch
            # of contexts (as ActNorm from the first batch of data), so that conditioners get
            # inputs of unit scale whatever the units of c
            self.context_shift = self.add_weight(
                shape=(self.context_dim,), initializer="zeros", trainable=False,
                name="context_shift",
            )  # fmt: skip
            self.context_scale = self.add_weight(
                shape=(self.context_dim,), initializer="ones", trainable=False,
                name="context_scale",
            )  # fmt: skip
            self.context_initialized = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="context_initialized"
            )
            if not self.standardize_context:
                self.context_initialized.assign(1.0)
        self._bits_per_dim_enabled = False
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        self.build((None, *self.data_event_shape))

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.base_event_shape = build_chain(self.flow_layers, tuple(input_shape)[1:])

    # ---- distributions and bijector views -------------------------------------------

    @property
    def event_size(self) -> int:
        """Number of dimensions of one data point (for bits per dimension)."""
        return int(np.prod(self.data_event_shape))

    @property
    def base_distribution(self) -> tfp.distributions.Distribution:
        """The base distribution p(z). Built on each access, so that no eager constant is
        captured by compiled or exported graphs."""
        dtype = self.compute_dtype
        loc = tf.zeros(self.base_event_shape, dtype=dtype)
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=tf.ones_like(loc)),
            reinterpreted_batch_ndims=len(self.base_event_shape),
        )

    @property
    def bijector(self) -> tfp.bijectors.Bijector:
        """The flow as one TFP bijector: ``tfb.Chain(layers[::-1])`` (forward: z -> x). A
        conditional flow's chain takes the context once, ``forward(z, context=c)``, and
        hands it to every conditional layer (``nfzoo.chain.ContextChain``)."""
        return ContextChain(
            list(reversed(self.flow_layers)),
            context_transform=self._context if self.context_dim else None,
            name=f"{self.name}_chain",
        )

    @property
    def distribution(self) -> tfp.distributions.Distribution:
        """The flow as a ``tfd.TransformedDistribution`` of the base through ``bijector``.
        Conditional flows: ``dist.log_prob(x, bijector_kwargs={"context": c})``; for
        ``dist.sample(shape, bijector_kwargs=...)`` the sample shape must broadcast with the
        context's batch shape (``sample([n, B], ...)`` for c [B, C])."""
        return tfd.TransformedDistribution(self.base_distribution, self.bijector)

    @property
    def has_inverse(self) -> bool:
        """Whether every layer has an inverse (needed by ``log_prob`` and ``encode``)."""
        return all(layer.has_inverse for layer in self.flow_layers)

    # ---- public API ------------------------------------------------------------------

    def log_prob(self, x: TensorLike, context: TensorLike | None = None) -> tf.Tensor:
        """log q(x) (or log q(x | c)) for data ``x`` of shape ``[batch..., *event_shape]``; the
        result has the batch shape (broadcast with the context's)."""
        return self._folded(self._log_prob, self._data(x), context, False)[0]

    def encode(self, x: TensorLike, context: TensorLike | None = None) -> tf.Tensor:
        """z = f(x), the normalizing direction (needs every layer's inverse)."""
        return self._folded(self._inverse_pass, self._data(x), context, False)[0]

    def generate(self, z: TensorLike, context: TensorLike | None = None) -> tf.Tensor:
        """x = g(z), the generative direction: deterministic given the noise ``z``."""
        return self._folded(self._forward_pass, self._noise(z), context, True)[0]

    def generate_and_log_prob(
        self, z: TensorLike, context: TensorLike | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(x, log q(x)) with x = g(z), in one forward pass. Works for flows without inverse
        (planar, Sylvester): log q(x) = log p(z) - log|det dx/dz|."""
        return self._folded(self._generate_and_log_prob, self._noise(z), context, True)

    def sample(
        self,
        n: int,
        seed: int | None = None,
        temperature: float = 1.0,
        *,
        context: TensorLike | None = None,
    ) -> tf.Tensor:
        """``n`` samples x = g(T z), z ~ p(z). An integer ``seed`` makes them reproducible.

        ``temperature`` T scales the base noise (Glow's reduced-temperature sampling, Kingma &
        Dhariwal 2018, section 5): T < 1 trades diversity for typical, cleaner samples; in a
        multi-scale flow every scale's noise is scaled alike.

        A conditional flow draws ``n`` samples for each context: c [B..., C] gives
        ``[n, B..., *event_shape]``, one context [C] gives ``[n, *event_shape]``."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"sample expects a non-negative integer n; received {n!r}.")
        if isinstance(temperature, bool) or not (
            isinstance(temperature, int | float | np.floating) and temperature > 0
        ):
            raise ValueError(f"sample expects a temperature > 0; received {temperature!r}.")
        context = self._checked_context(context)  # standardised in _folded
        shape: list[int] = [int(n)]
        if context is not None:
            shape += context.shape[:-1].as_list()
        # stateless: an integer seed gives the same samples on every call
        stateless_seed = None if seed is None else (check_seed(seed, "sample"), 0)
        dtype = tf.as_dtype(self.compute_dtype)
        z = standard_normal([*shape, *self.base_event_shape], dtype, stateless_seed)
        if temperature != 1.0:
            z = z * tf.cast(temperature, z.dtype)
        return self._folded(self._forward_pass, z, context, True)[0]

    def call(
        self,
        inputs: tf.Tensor | Sequence[tf.Tensor] | dict[str, tf.Tensor],
        training: bool | None = None,
    ) -> tf.Tensor:
        """Keras entry point: log q(x), so ``flow(x)`` and ``predict`` return log-densities;
        a conditional flow takes ``(x, context)``."""
        x, context = self._split_inputs(inputs)
        return self.log_prob(x, context=context)

    # ---- passes ----------------------------------------------------------------------
    # Each pass takes folded inputs: one batch axis, context [N, C] or None.

    def _log_prob(self, x, context=None):
        z, ildj = self._inverse_pass(x, context)
        return self.base_distribution.log_prob(z) + ildj, None

    def _generate_and_log_prob(self, z, context=None):
        x, fldj = self._forward_pass(z, context)
        return x, self.base_distribution.log_prob(z) - fldj

    def _inverse_pass(self, x, context=None):
        """x -> z through the layers in reverse order; returns (z, sum of log|det dz/dx|)."""
        return chain_inverse(self.flow_layers, x, context)

    def _forward_pass(self, z, context=None):
        """z -> x through the layers in order; returns (x, sum of log|det dx/dz|)."""
        return chain_forward(self.flow_layers, z, context)

    def _folded(self, fn, u, context, from_base: bool):
        """Runs ``fn(u, context) -> (a, b)`` on inputs folded to one batch axis (broadcast
        against the context's batch axes) and unfolds both results: ``a`` is an event
        (data side when ``from_base``, else base side) or a per-example value; ``b`` is a
        per-example value or None."""
        context = self._context(context)
        in_event = self.base_event_shape if from_base else self.data_event_shape
        u, context, batch = fold_batch(u, len(in_event), context)
        a, b = in_row_blocks(fn, u, context)
        a_rank = 0 if a.shape.rank == 1 else a.shape.rank - 1
        a = unfold_batch(a, batch, a_rank)
        return a, (None if b is None else unfold_batch(b, batch))

    def _split_inputs(self, inputs):
        """(x, context) from Keras inputs: x, or (x, context) / {"x", "context"} for a
        conditional flow."""
        if isinstance(inputs, dict):
            return inputs.get("x"), inputs.get("context")
        if isinstance(inputs, tuple | list):
            if len(inputs) == 1:
                return inputs[0], None
            if len(inputs) == 2:
                return inputs[0], inputs[1]
            raise ValueError(
                f"Flow {self.name!r} takes x or (x, context); received {len(inputs)} inputs."
            )
        return inputs, None

    def _context(self, context: TensorLike | None) -> tf.Tensor | None:
        """The checked context, standardised (see ``standardized_context``); None for an
        unconditional flow."""
        context = self._checked_context(context)
        return None if context is None else self.standardized_context(context)

    def _checked_context(self, context: TensorLike | None) -> tf.Tensor | None:
        who = f"Flow {self.name!r}"
        dtype = tf.as_dtype(self.compute_dtype)
        return check_context(context, self.context_dim, dtype, who).get("context")

    def standardized_context(self, context: tf.Tensor) -> tf.Tensor:
        """(c - shift) / scale: the context as the layers see it. shift and scale are the
        mean and standard deviation of the first batch of contexts ``fit`` (or
        ``initialize``) sees, kept as weights; (0, 1) with ``standardize_context=False``."""
        return (context - self.context_shift) / self.context_scale

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
        *,
        bits_per_dim: bool = False,
        global_clipnorm: float | None = DEFAULT_GLOBAL_CLIPNORM,
        **kwargs,
    ) -> None:
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

    def get_compile_config(self) -> dict[str, Any] | None:
        config = super().get_compile_config()
        if not config:  # not compiled
            return config
        return {**config, "bits_per_dim": self._bits_per_dim_enabled}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        # Keras skips models whose compile() is overridden; this one restores its own.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def compute_loss(
        self,
        x: tf.Tensor | Sequence[tf.Tensor] | dict[str, tf.Tensor] | None = None,
        y: tf.Tensor | None = None,
        y_pred: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
        training: bool = True,
    ) -> tf.Tensor:
        # y_pred is log q(x) (from ``call``); the loss is the mean negative log-likelihood. x
        # and y are Keras's arguments, which the loss does not read.
        if y_pred is None:
            raise ValueError(
                f"Flow {self.name!r}: compute_loss needs y_pred, the log-densities of call."
            )
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
    def metrics(self) -> list[keras.metrics.Metric]:
        metrics = super().metrics
        if not self._bits_per_dim_enabled:
            metrics = [m for m in metrics if m is not self.bits_per_dim_tracker]
        return metrics

    def train_step(
        self,
        data: tf.Tensor
        | tuple[tf.Tensor | tuple[tf.Tensor, ...] | dict[str, tf.Tensor] | None, ...],
    ) -> dict[str, tf.Tensor]:
        """One step of Keras's training loop, guarded: a step whose loss or gradients are not
        finite changes no weight, and neither does any later step; ``fit`` then stops with
        ``NonFiniteLossError`` naming the step (``_check_finite``), so the model keeps the
        weights of the last finite step."""
        x, y, weight = keras.utils.unpack_x_y_sample_weight(self._pack(data))
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, weight, training=True)
            # the mean over this replica's examples, a share of the global mean
            scaled = self.optimizer.scale_loss(_compat.scale_loss_for_distribution(loss))
        variables = self.trainable_weights
        grads = _bounded(tape.gradient(scaled, variables))
        healthy = tf.math.is_finite(loss)
        for g in grads:
            if g is not None:
                healthy = tf.logical_and(healthy, tf.reduce_all(tf.math.is_finite(g)))
        healthy = _compat.all_replicas(healthy)  # one replica's NaN stops them all
        guard = self._guard
        first_failure = tf.logical_and(tf.logical_not(healthy), guard.step < 0)
        step = tf.cast(self.optimizer.iterations, tf.int64) + 1
        guard.step.assign(tf.where(first_failure, step, guard.step))
        guard.loss.assign(tf.where(first_failure, tf.cast(loss, tf.float64), guard.loss))
        update = tf.logical_and(healthy, guard.step < 0)

        def apply(grads):
            self.optimizer.apply_gradients(zip(grads, variables))

        if variables:  # a flow of fixed maps (Permute, Logit, ...) has nothing to update
            _compat.apply_if(update, apply, (grads,))
        self._loss_tracker.update_state(
            tf.where(update, loss, tf.zeros_like(loss)),
            sample_weight=tf.where(update, tf.shape(y_pred)[0], 0),
        )
        return _shape_logs_for_multi_worker(self.compute_metrics(x, y, y_pred, weight))

    def test_step(
        self,
        data: tf.Tensor
        | tuple[tf.Tensor | tuple[tf.Tensor, ...] | dict[str, tf.Tensor] | None, ...],
    ) -> dict[str, tf.Tensor]:
        x, y, weight = keras.utils.unpack_x_y_sample_weight(self._pack(data))
        y_pred = self(x, training=False)
        loss = self.compute_loss(x, y, y_pred, weight, training=False)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        return _shape_logs_for_multi_worker(self.compute_metrics(x, y, y_pred, weight))

    def predict_step(
        self,
        data: tf.Tensor
        | tuple[tf.Tensor | tuple[tf.Tensor, ...] | dict[str, tf.Tensor] | None, ...],
    ) -> tf.Tensor:
        return super().predict_step(self._pack(data))

    def _pack(self, data):
        """Keras batches as this flow reads them: Keras unpacks a batch (x, c, w) as
        (x, y, sample_weight), so for a conditional flow the "target" slot y carries the
        context; it becomes part of the model's input ``(x, c)``."""
        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.context_dim is None:
            if y is not None:
                raise ValueError(
                    f"Flow {self.name!r} is unconditional: a batch is x or (x, None, weight); "
                    "received a second element (flows have no targets, and only a flow built "
                    "with context_dim takes a context)."
                )
            return data
        if isinstance(x, tuple | list | dict):
            return data  # already (x, context)
        if y is None:
            raise ValueError(
                f"Flow {self.name!r} is conditional (context_dim={self.context_dim}): a batch "
                "is (x, context) or (x, context, weight); received x alone. Pass "
                "flow.fit(x, context) or a tf.data pipeline of (x, context) pairs."
            )
        # (not keras.utils.pack_x_y_sample_weight: without y it drops the weights)
        return ((x, y),) if weight is None else ((x, y), None, weight)

    def fit(
        self,
        x: tf.Tensor | np.ndarray | tf.data.Dataset | None = None,
        context: tf.Tensor | np.ndarray | None = None,
        **kwargs,
    ) -> keras.callbacks.History:
        """``keras.Model.fit`` by negative log-likelihood; compiles with the defaults if needed
        and initialises data-dependent layers from the first batch.

        A conditional flow trains on pairs: ``fit(x, context)`` with arrays of [n, D] and
        [n, C], or a ``tf.data`` pipeline of ``(x, context)`` / ``(x, context, weight)``.
        ``validation_data`` takes the same forms: ``(x_val, context_val)``."""
        x = self._keras_data(x, context, kwargs)
        if not self.is_initialized and x is not None:
            self.initialize(*_first_batch(x, kwargs.get("y"), kwargs.get("batch_size")))
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a pipeline shuffles itself (Keras would warn)
        self._guard.reset()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _StopOnNonFinite()]
        history = super().fit(x, **kwargs)
        self._guard.raise_if_failed(self)
        return history

    @property
    def _guard(self) -> _NonFiniteGuard:
        """The step guard's state: plain variables outside the model's weights (not saved),
        created under the model's distribution strategy on first use."""
        if getattr(self, "_nonfinite_guard", None) is None:
            with self.distribute_strategy.scope():
                self._nonfinite_guard = _NonFiniteGuard()
        return self._nonfinite_guard

    def evaluate(
        self,
        x: tf.Tensor | np.ndarray | tf.data.Dataset | None = None,
        context: tf.Tensor | np.ndarray | None = None,
        **kwargs,
    ) -> float | list[float] | dict[str, float]:
        """``keras.Model.evaluate``: the NLL in nats per example (compiles with the defaults
        if needed, so a loaded flow evaluates at once); ``context`` as for ``fit``."""
        x = self._keras_data(x, context, kwargs)
        if not self.compiled:
            self.compile()
        return super().evaluate(x, **kwargs)

    def predict(
        self,
        x: tf.Tensor | np.ndarray | tf.data.Dataset | None = None,
        context: tf.Tensor | np.ndarray | None = None,
        **kwargs,
    ) -> np.ndarray:
        """``keras.Model.predict``: log q(x) (or log q(x | c)) in batches."""
        if context is not None:
            self._keras_data(x, context, {})  # the same checks as fit's
            x = (x, context)
        return super().predict(x, **kwargs)

    def _keras_data(self, x, context, kwargs: dict):
        """Puts ``context`` where Keras carries it: the ``y`` slot (see ``_pack``). Keras's
        own calls pass it there too (``fit`` evaluates ``validation_data`` as x=..., y=...),
        so ``y`` is taken as the context."""
        if "y" in kwargs:
            y = kwargs.pop("y")
            if context is not None and y is not None:
                raise ValueError(
                    f"Flow {self.name!r}: pass the context once (context= or y=), not both."
                )
            context = y if context is None else context
        if context is not None:
            if self.context_dim is None:
                self._context(context)  # raises: an unconditional flow takes no context
            if isinstance(x, tf.data.Dataset):
                raise ValueError(
                    "A tf.data pipeline carries its own contexts: make it yield (x, context) "
                    "pairs instead of passing context=."
                )
            kwargs["y"] = context
        return x

    @property
    def is_initialized(self) -> bool:
        """Whether every layer with data-dependent initialisation has been initialised (and,
        for a conditional flow, the context's standardisation)."""
        layers = all(layer.is_data_initialized for layer in self.flow_layers)
        return layers and (self.context_dim is None or self._context_is_initialized)

    @property
    def _context_is_initialized(self) -> bool:
        return bool(self.context_initialized.numpy() > 0)

    def initialize(self, x: TensorLike, context: TensorLike | None = None) -> None:
        """Initialises data-dependent layers (ActNorm) from a batch of data ``x`` (and of its
        contexts: their standardisation first), running the inverse pass from the data side
        up to the last such layer."""
        if self.context_dim is not None and not self._context_is_initialized:
            c = self._checked_context(context)
            c = tf.reshape(c, [-1, self.context_dim])
            mean, var = tf.nn.moments(c, axes=[0])
            std = tf.sqrt(var)
            # a constant feature keeps scale 1 (it carries no information to rescale)
            self.context_shift.assign(mean)
            self.context_scale.assign(tf.where(std > 1e-6 * (1.0 + tf.abs(mean)), std, 1.0))
            self.context_initialized.assign(1.0)
        context = self._context(context)
        x, context, _ = fold_batch(self._data(x), len(self.data_event_shape), context)
        initialize_chain(self.flow_layers, x, context)

    # ---- serialisation ----------------------------------------------------------------

    @property
    def _default_save_signature(self):
        """The ``serving_default`` signature of ``tf.saved_model.save(flow, path)`` (a hook of
        Keras's TensorFlow backend, which otherwise traces ``call`` = ``log_prob``):
        ``log_prob(x[, context])`` for a flow with an inverse, ``generate_and_log_prob(z[,
        context])`` for one without (planar, Sylvester), whose log_prob needs an inverse.
        ``nfzoo.export`` writes the deployable SavedModel with every endpoint."""
        dtype = tf.as_dtype(self.compute_dtype)
        data = tf.TensorSpec([None, *self.data_event_shape], dtype, name="x")
        noise = tf.TensorSpec([None, *self.base_event_shape], dtype, name="z")
        specs = [data if self.has_inverse else noise]
        if self.context_dim is not None:
            specs.append(tf.TensorSpec([None, self.context_dim], dtype, name="context"))

        def endpoint(u, context=None):
            if self.has_inverse:
                return {"log_prob": self.log_prob(u, context=context)}
            x, log_prob = self.generate_and_log_prob(u, context=context)
            return {"x": x, "log_prob": log_prob}

        return tf.function(endpoint, input_signature=specs)

    def card_summary(self) -> str:
        layers = ", ".join(type(layer).__name__ for layer in self.flow_layers)
        return (
            f"A normalizing flow on events of shape {list(self.data_event_shape)}.\n\n"
            f"Layers (generative order): {layers}."
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "event_shape": list(self.data_event_shape),
            "standardize_context": self.standardize_context,
            "layers": [keras.saving.serialize_keras_object(layer) for layer in self.flow_layers],
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Flow:
        config = dict(config)
        # configs written with the base named: the standard normal is the only one there is
        base = config.pop("base", "normal")
        if base != "normal":
            raise ValueError(f"Flow's base is the standard normal; the config names {base!r}.")
        layers = [
            keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
            for c in config.pop("layers")
        ]
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(layers=layers, **config)


#: gradients whose largest entry exceeds this are scaled down to it, all by one factor
GRADIENT_BOUND = 1e12


def _bounded(grads: list) -> list:
    """``grads`` scaled by one common factor so that no entry exceeds ``GRADIENT_BOUND``.

    A few extreme examples (1e6 among data of scale 1) give finite gradients of 1e15-1e20,
    whose squares overflow float32 in the global norm of gradient clipping: Keras then scales
    every gradient by NaN, and every weight becomes NaN (it is also what overflows Adam's
    second moment without clipping). Scaling all gradients by one factor keeps their
    direction, which is all that global-norm clipping keeps anyway, and Adam is nearly
    invariant to it; gradients of ordinary training (|g| << 1e12) are untouched."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    peak = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(g)) for g in present]))
    factor = tf.where(peak > GRADIENT_BOUND, GRADIENT_BOUND / peak, tf.ones_like(peak))
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]


class _NonFiniteGuard:
    """The first training step whose loss or gradients were not finite (-1: none yet) and its
    loss. A plain object: Keras does not track its variables, so they are neither weights
    nor saved."""

    def __init__(self):
        options = {"trainable": False, "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA}
        self.step = tf.Variable(tf.constant(-1, tf.int64), **options)
        self.loss = tf.Variable(tf.constant(0.0, tf.float64), **options)

    def reset(self) -> None:
        self.step.assign(-1)

    @property
    def failed(self) -> bool:
        return int(self.step.numpy()) >= 0

    def raise_if_failed(self, flow) -> None:
        if not self.failed:
            return
        step = int(self.step.numpy())
        raise NonFiniteLossError(
            f"Flow {flow.name!r}: training step {step} (the optimizer's count) had a "
            f"non-finite loss ({float(self.loss.numpy())}) or gradient; fit stopped, and the "
            f"flow keeps the weights after step {step - 1}. Check the data for NaN, inf or "
            "extreme values "
            "(standardise it, or build with standardize=True) and lower the learning rate."
        )


class _StopOnNonFinite(keras.callbacks.Callback):
    """Ends ``fit`` at the end of the compiled call in which a step was not finite (the
    guard in ``Flow.train_step`` already kept every later step of that call from updating)."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model._guard.failed:
            self.model.stop_training = True


def _shape_logs_for_multi_worker(logs):
    """Keras 3 reduces each replica's logs with ``strategy.reduce("MEAN", v, axis=0)`` under
    multi-worker training, which fails on scalars ("Invalid reduction dimension 0 for input
    with 0 dimensions", tensorflow/tensorflow#72388). Giving the scalars a length-1 axis
    there makes that reduction the mean over replicas; elsewhere logs stay scalars."""
    strategy = tf.distribute.get_strategy()
    if not (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and _compat.in_multi_worker_mode(strategy)
    ):
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}


def _first_batch(x, context, batch_size: int | None):
    """The first batch of ``x`` (array, tensor or tf.data.Dataset) and of its contexts, for
    initialisation: (x, context or None)."""
    if isinstance(x, tf.data.Dataset):
        batch = next(iter(x.take(1)))
        x, context, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if isinstance(x, tuple | list):  # ((x, c),) or (x,)
            x, context = (x[0], x[1] if len(x) > 1 else context)
        elif isinstance(x, dict):
            x, context = x.get("x"), x.get("context")
        return x, context
    n = max(batch_size or 0, INIT_BATCH)
    return x[:n], (None if context is None else context[:n])
