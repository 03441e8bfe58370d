r"""Flow-VAE: a VAE whose approximate posterior is a flow with parameters output by the encoder
(amortised flows; van den Berg et al. 2018, arXiv:1803.05649; Kingma et al. 2016,
arXiv:1606.04934; Rezende & Mohamed 2015, arXiv:1505.05770).

    z_0 ~ N(mu(x), diag sigma(x)^2),   z_K = f_K(... f_1(z_0)),   f_k = f(.; lambda_k(x))
    log q(z_K | x) = log N(z_0; mu, sigma^2) - sum_k log|det df_k / dz_{k-1}|
    ELBO(x) = E_q[ log p(x | z_K) + log p(z_K) - log q(z_K | x) ] <= log p(x)

.. math::

    z_0 &\sim \mathcal{N}\left(\mu(x), \operatorname{diag} \sigma(x)^2\right), \qquad
    z_K = f_K \circ \cdots \circ f_1(z_0), \qquad f_k = f(\,\cdot\,; \lambda_k(x)) \\
    \log q(z_K \mid x) &= \log \mathcal{N}(z_0; \mu, \sigma^2)
        - \sum_{k=1}^{K} \log\left|\det\frac{\partial f_k}{\partial z_{k-1}}\right| \\
    \mathrm{ELBO}(x) &= \mathbb{E}_q\left[\log p(x \mid z_K) + \log p(z_K)
        - \log q(z_K \mid x)\right] \le \log p(x)

p(z) = N(0, I); p(x | z) is Bernoulli with logits from the decoder. The importance-weighted
estimate (Burda et al. 2015, arXiv:1509.00519) with z_i ~ q(. | x), i = 1..k,

    L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x),     ELBO = E L_1 <= E L_k <= log p(x)

increases with k in expectation; -L_k is the "IW-NLL" reported by ``importance_weighted_nll``.

Posteriors (``POSTERIORS``): "none" (diagonal Gaussian), "planar", "iaf",
"sylvester-orthogonal", "sylvester-householder", "sylvester-triangular"; they live in
``nfzoo.amortized`` (re-exported here).

    train, val, test = nfzoo.data.binarized_digits()
    vae = FlowVAE(posterior="sylvester-orthogonal", latent_dim=8, seed=0)
    vae.compile(learning_rate=1e-3)            # Adam, jit_compile=True
    vae.fit(train, batch_size=100, epochs=50)  # loss: -ELBO (nats per example)
    vae.importance_weighted_nll(test, num_samples=500)   # per-example -L_k
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from nfzoo._types import TensorLike
from nfzoo.amortized import (
    POSTERIORS,
    AmortizedFlow,
    AmortizedIAF,
    AmortizedPlanar,
    AmortizedSylvesterHouseholder,
    AmortizedSylvesterOrthogonal,
    AmortizedSylvesterTriangular,
    NoFlow,
    make_posterior,
)
from nfzoo.constants import LOG_2PI
from nfzoo.model_base import PretrainedModel
from nfzoo.nets import Dense
from nfzoo.ops import soft_clamp

__all__ = [
    "POSTERIORS",
    "AmortizedFlow",
    "AmortizedIAF",
    "AmortizedPlanar",
    "AmortizedSylvesterHouseholder",
    "AmortizedSylvesterOrthogonal",
    "AmortizedSylvesterTriangular",
    "FlowVAE",
    "NoFlow",
    "make_posterior",
]

#: soft bound on the encoder's log sigma (convention 4: no inf/NaN from finite inputs)
LOG_SIGMA_CLAMP = 7.0


@keras.saving.register_keras_serializable(package="nfzoo")
class FlowVAE(PretrainedModel):
    """VAE on binary vectors with an amortised flow posterior (see the module docstring).

    Encoder: ``input_dim -> hidden_units`` (relu) = h(x); mu, log sigma and the flow's
    parameters are dense maps of h(x). Decoder: ``latent_dim -> reversed(hidden_units)``
    (relu) -> ``input_dim`` Bernoulli logits. ``fit`` maximises the single-sample
    reparameterised ELBO (loss = -ELBO, nats per example); ``evaluate`` reports it too.

    Args:
      input_dim: data dimension (64 for 8x8 digits).
      latent_dim: D, the size of the latent z.
      hidden_units: encoder hidden sizes (the decoder mirrors them).
      posterior: a name in ``POSTERIORS``.
      num_flows: K, flow steps of the posterior.
      posterior_kwargs: extra arguments of the posterior class.
      seed: seed of the initialisers and of the training noise.
    """

    objective = "-ELBO"
    pretrained_key = "flow_vae"

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 8,
        hidden_units: Sequence[int] = (128, 128),
        posterior: str = "none",
        num_flows: int = 4,
        posterior_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_units = [int(u) for u in hidden_units]
        self.posterior_name = posterior
        self.num_flows = int(num_flows)
        self.posterior_kwargs = dict(posterior_kwargs or {})
        self.seed = seed
        dt = self.dtype_policy

        def seed_of(i):
            return None if seed is None else seed + i

        glorot = keras.initializers.GlorotUniform
        self.encoder_layers = [
            Dense(u, "relu", kernel_initializer=glorot(seed_of(i)), dtype=dt, name=f"enc_{i}")
            for i, u in enumerate(self.hidden_units)
        ]
        self.mu_layer = Dense(
            latent_dim, kernel_initializer=glorot(seed_of(10)), dtype=dt, name="mu"
        )
        self.log_sigma_layer = Dense(
            latent_dim, kernel_initializer=glorot(seed_of(11)), dtype=dt, name="log_sigma"
        )
        self.decoder_layers = [
            Dense(u, "relu", kernel_initializer=glorot(seed_of(20 + i)), dtype=dt, name=f"dec_{i}")
            for i, u in enumerate(reversed(self.hidden_units))
        ]
        self.logits_layer = Dense(
            input_dim, kernel_initializer=glorot(seed_of(30)), dtype=dt, name="logits"
        )
        self.flow = make_posterior(
            posterior,
            latent_dim,
            num_flows=self.num_flows,
            seed=seed_of(40),
            dtype=dt,
            name="posterior",
            **self.posterior_kwargs,
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._log_weights_fn: Callable | None = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._build_all()

    def _build_all(self):
        shape = (None, self.input_dim)
        for layer in self.encoder_layers:
            layer.build(shape)
            shape = (None, layer.units)
        for layer in (self.mu_layer, self.log_sigma_layer):
            layer.build(shape)
        self.flow.build(shape)
        shape = (None, self.latent_dim)
        for layer in self.decoder_layers:
            layer.build(shape)
            shape = (None, layer.units)
        self.logits_layer.build(shape)
        self.built = True

    # ---- the model ---------------------------------------------------------------------

    def encode(
        self, x: TensorLike
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | tuple[tf.Tensor, ...]]:
        """(mu, log sigma, flow parameters) of q(. | x) for x [B, input_dim]."""
        h = tf.convert_to_tensor(x, self.compute_dtype)
        for layer in self.encoder_layers:
            h = layer(h)
        log_sigma = soft_clamp(self.log_sigma_layer(h), LOG_SIGMA_CLAMP)
        return self.mu_layer(h), log_sigma, self.flow.flow_parameters(h)

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Bernoulli logits of p(x | z), z [..., latent_dim]."""
        for layer in self.decoder_layers:
            z = layer(z)
        return self.logits_layer(z)

    def log_weights(self, x: TensorLike, eps: tf.Tensor) -> tf.Tensor:
        """log p(x, z) - log q(z | x) for z = flow(mu + sigma eps): x [B, input_dim],
        eps [..., B, latent_dim] standard normal; returns [..., B]."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        mu, log_sigma, params = self.encode(x)
        z0 = mu + tf.exp(log_sigma) * eps
        log_q0 = tf.reduce_sum(-0.5 * eps**2 - log_sigma - 0.5 * LOG_2PI, axis=-1)
        z, log_det = self.flow.forward_and_log_det(z0, params)
        log_q = log_q0 - log_det
        log_prior = tf.reduce_sum(-0.5 * z**2 - 0.5 * LOG_2PI, axis=-1)
        logits = self.decode(z)
        labels = tf.broadcast_to(x, tf.shape(logits))
        log_lik = -tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1
        )
        return log_lik + log_prior - log_q

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Single-sample ELBO per example (fresh noise)."""
        eps = keras.random.normal(
            (tf.shape(x)[0], self.latent_dim), dtype=self.compute_dtype, seed=self.seed_generator
        )
        return self.log_weights(x, eps)

    # ---- Keras plumbing ----------------------------------------------------------------

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def train_step(self, data: tf.Tensor | tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self(x, training=True))
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data: tf.Tensor | tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        self.loss_tracker.update_state(-tf.reduce_mean(self(x)))
        return {"loss": self.loss_tracker.result()}

    # ---- generation --------------------------------------------------------------------

    def sample(self, n: int, seed: int | None = None, probabilities: bool = False) -> tf.Tensor:
        """Draws ``n`` new data points through the decoder: z ~ p(z) = N(0, I), then
        x ~ Bernoulli(sigmoid(decode(z))); returns [n, input_dim] of 0.0 / 1.0. With
        ``probabilities``, the Bernoulli means sigmoid(decode(z)) instead of draws. The
        posterior flow takes no part: it is q(z | x), for inference. The same ``seed`` gives
        the same draws (stateless noise); None draws fresh noise."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive number of samples; received {n!r}.")
        shape = (int(n), self.latent_dim)
        dtype = self.compute_dtype
        if seed is None:
            z = tf.random.normal(shape, dtype=dtype)
            u = tf.random.uniform((int(n), self.input_dim), dtype=dtype)
        else:
            z = tf.random.stateless_normal(shape, seed=(seed, 0), dtype=dtype)
            u = tf.random.stateless_uniform((int(n), self.input_dim), seed=(seed, 1), dtype=dtype)
        p = tf.sigmoid(self.decode(z))
        return p if probabilities else tf.cast(u < p, dtype)

    # ---- evaluation --------------------------------------------------------------------

    def sample_log_weights(
        self, x: npt.ArrayLike, num_samples: int, seed: int = 0, batch_size: int = 100
    ) -> np.ndarray:
        """Log importance weights [num_samples, n] (float64 numpy) for x [n, input_dim], from
        stateless noise: the same seed gives the same numbers. Runs ``batch_size`` examples
        at a time."""
        x = np.asarray(x)
        if self._log_weights_fn is None:
            self._log_weights_fn = tf.function(self.log_weights, reduce_retracing=True)
        fn = self._log_weights_fn
        out = []
        for i, start in enumerate(range(0, len(x), batch_size)):
            xb = tf.constant(x[start : start + batch_size], self.compute_dtype)
            eps = tf.random.stateless_normal(
                (num_samples, xb.shape[0], self.latent_dim), (seed, i), dtype=self.compute_dtype
            )
            out.append(fn(xb, eps).numpy().astype(np.float64))
        return np.concatenate(out, axis=1)

    def elbo(
        self, x: npt.ArrayLike, num_samples: int = 1, seed: int = 0, batch_size: int = 100
    ) -> np.ndarray:
        """Per-example ELBO estimate (mean of ``num_samples`` log weights), nats."""
        return self.sample_log_weights(x, num_samples, seed, batch_size).mean(axis=0)

    def importance_weighted_nll(
        self, x: npt.ArrayLike, num_samples: int = 500, seed: int = 0, batch_size: int = 100
    ) -> np.ndarray:
        """Per-example -L_k = -log (1/k sum_i p(x, z_i) / q(z_i | x)), z_i ~ q(. | x),
        k = ``num_samples`` (nats; an upper bound of -log p(x) in expectation)."""
        log_w = self.sample_log_weights(x, num_samples, seed, batch_size)
        m = log_w.max(axis=0)
        return -(m + np.log(np.mean(np.exp(log_w - m), axis=0)))

    def card_summary(self) -> str:
        return (
            f"A VAE on {self.input_dim}-d binary vectors with a {self.latent_dim}-d latent and "
            f"the {self.posterior_name!r} posterior ({self.num_flows} flow steps)."
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden_units": self.hidden_units,
            "posterior": self.posterior_name,
            "num_flows": self.num_flows,
            "posterior_kwargs": self.posterior_kwargs,
            "seed": self.seed,
        }
