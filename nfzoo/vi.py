r"""Variational inference with flows: reverse-KL fitting through Keras ``fit``, and diagnostics.

Given an unnormalised target p~(x) = Z p(x) (``nfzoo.targets``, or any callable log_p(x)) and
a flow q with x = g(z), z ~ p(z) (the flow's base), reverse KL is (lecture notes, "Reverse KL
for flow model"; Rezende & Mohamed 2015, arXiv:1505.05770, eq. 15)

    KL(q || p) = E_{z ~ p(z)}[ log p(z) - log|det dg/dz| - log p~(g(z)) ] + log Z
               = log Z - ELBO,        ELBO = E_q[ log p~(x) - log q(x) ] <= log Z

.. math::

    \mathrm{KL}(q \,\|\, p) &= \mathbb{E}_{z \sim p(z)}\left[\log p(z)
        - \log\left|\det\frac{\partial g(z)}{\partial z}\right| - \log \tilde p(g(z))\right]
        + \log Z \\
    &= \log Z - \mathrm{ELBO}, \qquad
    \mathrm{ELBO} = \mathbb{E}_{q}\left[\log \tilde p(x) - \log q(x)\right] \le \log Z

so minimising -ELBO needs only samples x = g(z) and log q(x) from the same forward pass
(``Flow.generate_and_log_prob``): no inverse, which is why planar, radial and Sylvester flows
(and IAF, with its parallel forward) are the natural choice. The gradient is the
reparameterisation gradient through x = g(z).

Importance weights w_i = p~(x_i) / q(x_i), x_i ~ q, give (each w_i is unbiased for Z):

    log Z_hat = log( 1/n sum_i w_i )                       (log-mean-exp of the log weights)
    se(log Z_hat) ~= sd(w) / (sqrt(n) mean(w))              (delta method: se(Z_hat) / Z_hat)
    ESS fraction  = (sum_i w_i)^2 / (n sum_i w_i^2)         (Kish; 1 when q = p)

The delta-method standard error is itself estimated from the weights: where the weights have
heavy tails (q misses mass of p) both it and log Z_hat are too small, and a small ESS says so.

    model = vi.ReverseKL(flow, targets.get("u1"), num_samples=256, seed=0)
    model.compile(learning_rate=1e-3)       # Adam, jit_compile=True by default
    model.fit(epochs=10, steps_per_epoch=200)
    model.evaluate(steps=20, return_dict=True)   # loss (-ELBO), elbo, log_z, log_z_se, ess
    vi.diagnostics(flow, target, num_samples=100_000, seed=1)   # the same, as a dataclass
    flow.save("fitted.keras")               # the trained flow is the Flow that went in
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NoReturn

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from nfzoo import targets as targets_lib
from nfzoo._types import TensorLike
from nfzoo.flow import Flow
from nfzoo.model_base import TrainableModel

__all__ = [
    "Diagnostics",
    "ImportanceStats",
    "ReverseKL",
    "diagnostics",
    "fit_reverse_kl",
    "flow_kl",
    "importance_stats",
]

#: ``fit`` steps per epoch when none are given
DEFAULT_STEPS_PER_EPOCH = 100


def _dummy_dataset() -> tf.data.Dataset:
    """An endless stream of one scalar: ``fit``/``evaluate`` count steps on it; the samples
    themselves are drawn inside the compiled step."""
    return tf.data.Dataset.from_tensors(tf.zeros((), tf.float32)).repeat()


def _check_flow(flow) -> Flow:
    if not isinstance(flow, Flow):
        raise ValueError(f"Expected an nfzoo.Flow; received {type(flow).__name__}.")
    if len(flow.data_event_shape) != 1:
        raise ValueError(
            "Reverse-KL targets take vectors [n, D]; the flow's event shape is "
            f"{flow.data_event_shape}."
        )
    return flow


def _mark_data_initialized(flow: Flow) -> None:
    """Layers initialised from data (ActNorm) have no data under reverse KL: they keep their
    identity start, and are marked initialised so that a later ``flow.fit`` by likelihood
    does not overwrite what reverse KL has learned."""
    for layer in flow.flow_layers:
        if layer.needs_data_init and not layer.is_data_initialized:
            layer.mark_data_initialized()


# ---- importance-weight statistics ------------------------------------------------------


class ImportanceStats(keras.metrics.Metric):
    """Streaming log Z estimate, its delta-method standard error and the ESS fraction, from
    log importance weights log w = log p~(x) - log q(x), over every sample seen since the
    last reset (one epoch under ``fit``; all steps under ``evaluate``).

    State (float64, rescaled by the running maximum m so that nothing overflows):
    n, m, s1 = sum exp(log w - m), s2 = sum exp(2 (log w - m)). Results:
    log_z = m + log(s1 / n), log_z_se = sqrt((n s2 / s1^2 - 1) / (n - 1)),
    ess = s1^2 / (n s2).
    """

    def __init__(self, name: str = "importance", **kwargs):
        super().__init__(name=name, dtype="float64", **kwargs)
        self.count = self.add_variable((), initializer="zeros", dtype="float64", name="count")
        self.shift = self.add_variable((), initializer="zeros", dtype="float64", name="shift")
        self.sum_w = self.add_variable((), initializer="zeros", dtype="float64", name="sum_w")
        self.sum_w2 = self.add_variable((), initializer="zeros", dtype="float64", name="sum_w2")
        self.reset_state()

    def reset_state(self) -> None:
        self.count.assign(0.0)
        self.shift.assign(-1e300)  # finite, so exp(shift - new) is 0, never nan
        self.sum_w.assign(0.0)
        self.sum_w2.assign(0.0)

    def update_state(self, log_w: TensorLike, sample_weight: TensorLike | None = None) -> None:
        del sample_weight
        log_w = tf.reshape(tf.cast(log_w, tf.float64), [-1])
        new_shift = tf.maximum(self.shift, tf.reduce_max(log_w))
        scale = tf.exp(self.shift - new_shift)
        u = log_w - new_shift
        self.sum_w.assign(self.sum_w * scale + tf.reduce_sum(tf.exp(u)))
        self.sum_w2.assign(self.sum_w2 * scale * scale + tf.reduce_sum(tf.exp(2.0 * u)))
        self.count.assign_add(tf.cast(tf.size(log_w), tf.float64))
        self.shift.assign(new_shift)

    def result(self) -> dict[str, tf.Tensor]:
        n = tf.maximum(self.count, 1.0)
        rel_second_moment = n * self.sum_w2 / tf.square(self.sum_w)  # E[w^2] / E[w]^2
        return {
            "log_z": self.shift + tf.math.log(self.sum_w / n),
            "log_z_se": tf.sqrt(tf.maximum(rel_second_moment - 1.0, 0.0) / tf.maximum(n - 1, 1)),
            "ess": 1.0 / rel_second_moment,
        }


def importance_stats(log_w: npt.ArrayLike) -> dict[str, float]:
    """``{"log_z", "log_z_se", "ess"}`` from a 1-D array of log importance weights (float64
    numpy, the same formulas as ``ImportanceStats``)."""
    log_w = np.asarray(log_w, np.float64).ravel()
    n = log_w.size
    if n < 2:
        raise ValueError(f"importance_stats needs at least 2 log weights; received {n}.")
    m = log_w.max()
    w = np.exp(log_w - m)
    s1, s2 = w.sum(), np.square(w).sum()
    rel = n * s2 / s1**2
    return {
        "log_z": float(m + np.log(s1 / n)),
        "log_z_se": float(np.sqrt(max(rel - 1.0, 0.0) / (n - 1))),
        "ess": float(1.0 / rel),
    }


# ---- the Keras model -------------------------------------------------------------------


class ReverseKL(TrainableModel):
    """Trains ``flow`` by reverse KL to ``target`` with Keras ``fit``.

    Each step draws z ~ N(0, I) of shape ``[num_samples, *flow.base_event_shape]`` (fresh noise
    every step, from a Keras SeedGenerator: reproducible with ``seed``, compiled under XLA),
    runs x, log q(x) = flow.generate_and_log_prob(z) and minimises
    mean(log q(x) - beta * log p~(x)). ``fit`` and ``evaluate`` need no data: they run on an
    endless dummy dataset and count ``steps_per_epoch`` / ``steps``.

    Reported metrics (each epoch, or over all ``evaluate`` steps), all with beta = 1:

    * loss: -ELBO, the mean of log q - log p~ (nats; equals KL(q||p) - log Z);
    * elbo: ELBO;
    * log_z, log_z_se: the importance-sampled log Z over every sample of the epoch (each
      weight p~/q_t is unbiased for Z even as q_t changes) and its delta-method error;
    * ess: the ESS fraction of those weights.

    Args:
      flow: the nfzoo.Flow to train (trained in place; save it as any flow).
      target: an nfzoo.targets.Target, a registered target name, or a callable log_p(x).
      num_samples: Monte-Carlo samples per step.
      anneal_steps: if > 0, beta rises linearly from ``initial_beta`` to 1 over this many
        steps (Rezende & Mohamed 2015, section 6.1); 0 (default): beta = 1 throughout.
      initial_beta: beta at step 0 when annealing.
      seed: seed of the noise stream (None: from Keras' global seed).
    """

    objective = "-ELBO"

    def __init__(
        self,
        flow: Flow,
        target: Any,
        num_samples: int = 256,
        anneal_steps: int = 0,
        initial_beta: float = 0.01,
        seed: int | None = None,
        name: str = "reverse_kl",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.flow = _check_flow(flow)
        #: the unnormalized target p~, as an nfzoo.targets.Target
        self.target = targets_lib.as_target(target, event_dim=flow.data_event_shape[0])
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an integer >= 2; received {num_samples!r}.")
        self.num_samples = num_samples
        self.anneal_steps = int(anneal_steps)
        self.initial_beta = float(initial_beta)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.neg_elbo_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.importance = ImportanceStats()
        self.built = True  # the flow is built; nothing here depends on input shapes

    # ---- one Monte-Carlo draw -----------------------------------------------------------

    def draw(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(x, log q(x), log p~(x)) for ``num_samples`` fresh samples x ~ q."""
        z = keras.random.normal(
            (self.num_samples, *self.flow.base_event_shape),
            dtype=self.flow.compute_dtype,
            seed=self.seed_generator,
        )
        x, log_q = self.flow.generate_and_log_prob(z)
        return x, log_q, self.target.log_prob(x)

    @property
    def log_target(self) -> targets_lib.Target:
        """Former name of ``target`` (it holds a Target, not a log-density), kept for one
        release."""
        warnings.warn(
            "ReverseKL.log_target is now ReverseKL.target; log_target will be removed in the "
            "next release.",
            FutureWarning,
            stacklevel=2,
        )
        return self.target

    def beta(self) -> tf.Tensor:
        """The annealing factor of log p~ at the current optimizer step."""
        if self.anneal_steps <= 0:
            return tf.constant(1.0, self.flow.compute_dtype)
        step = tf.cast(self.optimizer.iterations, self.flow.compute_dtype)
        return tf.minimum(1.0, self.initial_beta + step / self.anneal_steps)

    # ---- Keras plumbing -----------------------------------------------------------------

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.neg_elbo_tracker, self.elbo_tracker, self.importance]

    def _update_metrics(self, log_q, log_p):
        log_w = log_p - log_q
        elbo = tf.reduce_mean(log_w)
        self.neg_elbo_tracker.update_state(-elbo)
        self.elbo_tracker.update_state(elbo)
        self.importance.update_state(log_w)
        return self.get_metrics_result()

    def train_step(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        del data  # the dummy dataset only counts steps
        with tf.GradientTape() as tape:
            _, log_q, log_p = self.draw()
            loss = tf.reduce_mean(log_q - self.beta() * log_p)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._update_metrics(log_q, log_p)

    def test_step(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        del data
        _, log_q, log_p = self.draw()
        return self._update_metrics(log_q, log_p)

    def _no_data(self, method, x, y):
        if x is not None or y is not None:
            raise ValueError(
                f"ReverseKL.{method} draws its own samples from the flow and takes no data; "
                "received x or y. Pass steps_per_epoch (fit) or steps (evaluate)."
            )
        if not self.compiled:
            self.compile()
        _mark_data_initialized(self.flow)

    def fit(
        self,
        x: None = None,
        y: None = None,
        epochs: int = 1,
        steps_per_epoch: int | None = None,
        **kwargs,
    ) -> keras.callbacks.History:
        """``keras.Model.fit`` with no data: ``epochs`` x ``steps_per_epoch`` (default 100)
        steps; compiles with the defaults if needed. Returns the History."""
        self._no_data("fit", x, y)
        for bad in ("batch_size", "validation_split", "validation_data", "shuffle"):
            if kwargs.get(bad) is not None:
                raise ValueError(f"ReverseKL.fit takes no {bad} (it draws num_samples a step).")
            kwargs.pop(bad, None)
        return super().fit(
            _dummy_dataset(),
            epochs=epochs,
            shuffle=False,
            steps_per_epoch=steps_per_epoch or DEFAULT_STEPS_PER_EPOCH,
            **kwargs,
        )

    def evaluate(
        self, x: None = None, y: None = None, steps: int | None = None, **kwargs
    ) -> float | list[float] | dict[str, float]:
        """``keras.Model.evaluate`` with no data, over ``steps`` (default 10) fresh draws of
        ``num_samples``: -ELBO, ELBO, log Z, its standard error and the ESS fraction."""
        self._no_data("evaluate", x, y)
        return super().evaluate(_dummy_dataset(), steps=steps or 10, **kwargs)

    def get_config(self) -> NoReturn:
        raise NotImplementedError(
            "ReverseKL is a training wrapper and is not saved; save its flow (model.flow)."
        )


def fit_reverse_kl(
    flow: Flow,
    target: Any,
    steps: int = 1000,
    num_samples: int = 256,
    learning_rate: float = 1e-3,
    anneal_steps: int = 0,
    seed: int | None = 0,
    jit_compile: bool = True,
    **fit_kwargs,
) -> keras.callbacks.History:
    """Trains ``flow`` in place by reverse KL to ``target`` for ``steps`` Adam steps (one
    epoch per 100 steps, so the History has a row per 100 steps). Returns the History."""
    model = ReverseKL(flow, target, num_samples=num_samples, anneal_steps=anneal_steps, seed=seed)
    model.compile(learning_rate=learning_rate, jit_compile=jit_compile)
    per_epoch = min(steps, DEFAULT_STEPS_PER_EPOCH)
    if steps % per_epoch:
        raise ValueError(f"steps must be a multiple of {per_epoch}; received {steps}.")
    fit_kwargs.setdefault("verbose", 0)
    return model.fit(epochs=steps // per_epoch, steps_per_epoch=per_epoch, **fit_kwargs)


# ---- diagnostics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnostics:
    """Monte-Carlo diagnostics of a flow q against a target p~ = Z p.

    Attributes:
      elbo: mean of log p~(x) - log q(x) over the samples.
      elbo_se: its standard error.
      log_z: importance-sampled log Z.
      log_z_se: its delta-method standard error.
      ess: ESS fraction of the importance weights, in (0, 1].
      num_samples: n, the number of samples.
      log_z_true: the target's exact log Z, or None.
    """

    elbo: float
    elbo_se: float
    log_z: float
    log_z_se: float
    ess: float
    num_samples: int
    log_z_true: float | None = None

    @property
    def kl(self) -> float | None:
        """KL(q || p) = log Z - ELBO, where log Z is known exactly (standard error elbo_se)."""
        return None if self.log_z_true is None else self.log_z_true - self.elbo

    @property
    def log_z_error(self) -> float | None:
        """log Z_hat - log Z, where log Z is known exactly."""
        return None if self.log_z_true is None else self.log_z - self.log_z_true


def diagnostics(
    flow: Flow, target: Any, num_samples: int = 10_000, seed: int = 0, batch_size: int = 8192
) -> Diagnostics:
    """ELBO, log Z estimate (with standard error) and ESS of ``flow`` for ``target`` from
    ``num_samples`` samples of the flow (stateless noise: the same ``seed`` gives the same
    numbers). Runs in batches of ``batch_size``."""
    flow = _check_flow(flow)
    target = targets_lib.as_target(target, event_dim=flow.data_event_shape[0])
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2; received {num_samples!r}.")
    log_w = _log_weights(flow, target, num_samples, seed, batch_size)
    stats = importance_stats(log_w)
    return Diagnostics(
        elbo=float(log_w.mean()),
        elbo_se=float(log_w.std(ddof=1) / math.sqrt(num_samples)),
        num_samples=num_samples,
        log_z_true=target.log_z,
        **stats,
    )


def _log_weights(flow, target, num_samples, seed, batch_size) -> np.ndarray:
    @tf.function
    def batch(z):
        x, log_q = flow.generate_and_log_prob(z)
        return target.log_prob(x) - log_q

    return np.concatenate(
        [
            batch(_noise(flow, n, (seed, i))).numpy().astype(np.float64)
            for i, n in enumerate(_batches(num_samples, batch_size))
        ]
    )


def _batches(total: int, size: int) -> list[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def _noise(flow: Flow, n: int, seed) -> tf.Tensor:
    return tf.random.stateless_normal(
        (n, *flow.base_event_shape), seed=seed, dtype=flow.compute_dtype
    )


def flow_kl(
    q: Flow, p: Flow, num_samples: int = 10_000, seed: int = 0, batch_size: int = 8192
) -> tuple[float, float]:
    """Monte-Carlo KL(q || p) = E_q[log q(x) - log p(x)] between two flows, and its standard
    error. Samples come from q (its forward pass), so q needs no inverse; p needs one."""
    _check_flow(q)
    _check_flow(p)
    if not p.has_inverse:
        raise ValueError(f"flow_kl needs log p(x) of the second flow; {p.name} has no inverse.")
    if q.data_event_shape != p.data_event_shape:
        raise ValueError(
            f"flow_kl needs flows of one event shape; received {q.data_event_shape} and "
            f"{p.data_event_shape}."
        )
    log_p = tf.function(p.log_prob)
    target = targets_lib.CallableTarget(
        lambda x: tf.cast(log_p(tf.cast(x, p.compute_dtype)), x.dtype),
        event_dim=q.data_event_shape[0],
        name=p.name,
    )
    diff = -_log_weights(q, target, num_samples, seed, batch_size)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(num_samples))
