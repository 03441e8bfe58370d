"""Flow-VAE: a VAE whose approximate posterior is a flow with parameters output by the encoder
(amortised flows; van den Berg et al. 2018, arXiv:1803.05649; Kingma et al. 2016,
arXiv:1606.04934; Rezende & Mohamed 2015, arXiv:1505.05770).

    z_0 ~ N(mu(x), diag sigma(x)^2),   z_K = f_K(... f_1(z_0)),   f_k = f(.; lambda_k(x))
    log q(z_K | x) = log N(z_0; mu, sigma^2) - sum_k log|det df_k / dz_{k-1}|
    ELBO(x) = E_q[ log p(x | z_K) + log p(z_K) - log q(z_K | x) ] <= log p(x)

p(z) = N(0, I); p(x | z) is Bernoulli with logits from the decoder. The importance-weighted
estimate (Burda et al. 2015, arXiv:1509.00519) with z_i ~ q(. | x), i = 1..k,

    L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x),     ELBO = E L_1 <= E L_k <= log p(x)

increases with k in expectation; -L_k is the "IW-NLL" reported by ``importance_weighted_nll``.

Posteriors (``POSTERIORS``): "none" (diagonal Gaussian), "planar", "iaf",
"sylvester-orthogonal", "sylvester-householder", "sylvester-triangular". Each amortised flow
reuses the transform of the corresponding layer, written once as a pure function of (z,
parameters): ``planar_forward`` (nfzoo.layers.residual), ``sylvester_forward``,
``orthogonalize`` (nfzoo.layers.sylvester), ``householder_product`` (nfzoo.ops),
``affine_params`` / ``affine_forward`` and ``MADE`` with a context input
(nfzoo.layers.autoregressive, nfzoo.nets). The layers call them with their weights
(no leading axes); the posteriors here with per-example parameters (leading axis B), and
samples z of shape [..., B, D] broadcast against them.

    train, val, test = nfzoo.data.binarized_digits()
    vae = FlowVAE(posterior="sylvester-orthogonal", latent_dim=8, seed=0)
    vae.compile(learning_rate=1e-3)            # Adam, jit_compile=True
    vae.fit(train, batch_size=100, epochs=50)  # loss: -ELBO (nats per example)
    vae.importance_weighted_nll(test, num_samples=500)   # per-example -L_k
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nfzoo.layers.autoregressive import affine_forward, affine_params
from nfzoo.layers.residual import planar_forward
from nfzoo.layers.sylvester import orthogonalize, sylvester_forward
from nfzoo.nets import MADE
from nfzoo.ops import householder_product, soft_clamp
from nfzoo.trainable import TrainableModel

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
_LOG_2PI = math.log(2.0 * math.pi)


def _head(units: int, name: str, dtype, scale: float, bias_scale: float = 0.0, seed=None):
    """A Dense map h(x) -> flow parameters: small random kernel (near the identity, but not
    at the saddle where planar and Sylvester have zero gradient), bias zero or random."""
    bias = (
        keras.initializers.RandomNormal(0.0, bias_scale, seed=seed)
        if bias_scale
        else keras.initializers.Zeros()
    )
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.RandomNormal(0.0, scale, seed=seed),
        bias_initializer=bias,
        dtype=dtype,
        name=name,
    )


class AmortizedFlow(keras.layers.Layer):
    """K flow steps on R^D whose parameters are per-example functions of a context h(x).

    ``flow_parameters(h)`` maps a context [B, H] to per-example parameters (leading axis B);
    ``forward_and_log_det(z, params)`` maps z_0 [..., B, D] to (z_K, sum_k log|det J_k|) with
    the log-det of shape [..., B]. Subclasses implement ``_build_heads`` and ``_step``.

    Args:
      latent_dim: D.
      num_flows: K.
      init_scale: scale of the initial parameters (small: the flow starts near the identity).
      seed: seed of the heads' initialisers.
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int = 4,
        init_scale: float = 0.01,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.num_flows = int(num_flows)
        self.init_scale = float(init_scale)
        self.seed = seed

    def _seed(self, i: int):
        return None if self.seed is None else self.seed + 101 * i

    def build(self, context_shape):
        self.context_dim = int(context_shape[-1])
        self._build_heads(self.context_dim)

    def _build_heads(self, context_dim: int) -> None:
        """Creates the layers that map the context to parameters."""

    def flow_parameters(self, h):
        """Per-example parameters of every step from the context h [B, H]."""
        return h

    def forward_and_log_det(self, z, params):
        total = tf.zeros(tf.shape(z)[:-1], z.dtype)
        for k in range(self.num_flows):
            z, ldj = self._step(k, z, params)
            total = total + ldj
        return z, total

    def _step(self, k, z, params):
        raise NotImplementedError

    def call(self, z, h):
        return self.forward_and_log_det(z, self.flow_parameters(h))

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_flows": self.num_flows,
            "init_scale": self.init_scale,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="nfzoo")
class NoFlow(AmortizedFlow):
    """The identity: q(z | x) is the encoder's diagonal Gaussian."""

    def __init__(self, latent_dim: int, num_flows: int = 0, **kwargs):
        super().__init__(latent_dim, num_flows=0, **kwargs)


@keras.saving.register_keras_serializable(package="nfzoo")
class AmortizedPlanar(AmortizedFlow):
    """K planar steps z <- z + u' tanh(w^T z + b), (u, w, b) = heads(h(x)) per step
    (``planar_forward``: the same map and constraint w^T u' > -1 as ``layers.Planar``)."""

    def _build_heads(self, context_dim):
        D, K = self.latent_dim, self.num_flows
        dt = self.dtype_policy
        s = self.init_scale * math.sqrt(1.0 / context_dim)
        self.u_head = _head(K * D, "u", dt, s, seed=self._seed(0))
        self.w_head = _head(K * D, "w", dt, s, seed=self._seed(1))
        self.b_head = _head(K, "b", dt, s, seed=self._seed(2))
        for head in (self.u_head, self.w_head, self.b_head):
            head.build((None, context_dim))

    def flow_parameters(self, h):
        D, K = self.latent_dim, self.num_flows
        u = tf.reshape(self.u_head(h), [-1, K, D])
        w = tf.reshape(self.w_head(h), [-1, K, D])
        return u, w, self.b_head(h)

    def _step(self, k, z, params):
        u, w, b = params
        return planar_forward(z, u[:, k], w[:, k], b[:, k])


class _AmortizedSylvester(AmortizedFlow):
    """K Sylvester steps z <- z + Q R tanh(R~ Q^T z + b) with (R, R~, b) = heads(h(x)) per
    step, R and R~ made upper-triangular with a tanh diagonal by ``sylvester_forward`` (as
    the layers do); subclasses provide Q per example (M = D unless stated)."""

    def _num_vectors(self) -> int:
        return self.latent_dim

    def _build_heads(self, context_dim):
        M, K = self._num_vectors(), self.num_flows
        dt = self.dtype_policy
        s = self.init_scale * math.sqrt(1.0 / context_dim)
        self.r1_head = _head(K * M * M, "r", dt, s, seed=self._seed(0))
        self.r2_head = _head(K * M * M, "r_tilde", dt, s, seed=self._seed(1))
        self.b_head = _head(K * M, "b", dt, s, seed=self._seed(2))
        for head in (self.r1_head, self.r2_head, self.b_head):
            head.build((None, context_dim))
        self._build_q_heads(context_dim)

    def _build_q_heads(self, context_dim):
        pass

    def _q(self, h):
        """Per-example Q, [B, K, D, M] (or a constant [K, D, M])."""
        raise NotImplementedError

    def flow_parameters(self, h):
        M, K = self._num_vectors(), self.num_flows
        r1 = tf.reshape(self.r1_head(h), [-1, K, M, M])
        r2 = tf.reshape(self.r2_head(h), [-1, K, M, M])
        b = tf.reshape(self.b_head(h), [-1, K, M])
        return self._q(h), r1, r2, b

    def _step(self, k, z, params):
        q, r1, r2, b = params
        qk = q[:, k] if q.shape.rank == 4 else q[k]
        return sylvester_forward(z, qk, r1[:, k], r2[:, k], b[:, k])


@keras.saving.register_keras_serializable(package="nfzoo")
class AmortizedSylvesterOrthogonal(_AmortizedSylvester):
    """Orthogonal Sylvester: Q [D, M] per example and step from a head, orthogonalised by
    ``orthogonalize`` (the iteration of ``layers.SylvesterOrthogonal``).

    Args:
      num_vectors: M <= D (default D).
    """

    def __init__(self, latent_dim: int, num_vectors: int | None = None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_vectors = num_vectors

    def _num_vectors(self):
        m = self.num_vectors or self.latent_dim
        if not 1 <= m <= self.latent_dim:
            raise ValueError(f"num_vectors must be in 1..{self.latent_dim}; received {m}.")
        return m

    def _build_q_heads(self, context_dim):
        D, M, K = self.latent_dim, self._num_vectors(), self.num_flows
        s = self.init_scale * math.sqrt(1.0 / context_dim)
        # A random bias: Q_raw must be full rank at the start (orthogonalisation of ~0 is
        # ill-conditioned); the kernel lets it vary with x.
        self.q_head = _head(K * D * M, "q", self.dtype_policy, s, 1.0, seed=self._seed(3))
        self.q_head.build((None, context_dim))

    def _q(self, h):
        D, M, K = self.latent_dim, self._num_vectors(), self.num_flows
        return orthogonalize(tf.reshape(self.q_head(h), [-1, K, D, M]))

    def get_config(self):
        return {**super().get_config(), "num_vectors": self.num_vectors}


@keras.saving.register_keras_serializable(package="nfzoo")
class AmortizedSylvesterHouseholder(_AmortizedSylvester):
    """Householder Sylvester: Q = H_1 ... H_R per example and step, the reflection vectors
    from a head (``householder_product``, as ``layers.SylvesterHouseholder``).

    Args:
      num_reflections: R (default D).
    """

    def __init__(self, latent_dim: int, num_reflections: int | None = None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_reflections = num_reflections

    def _build_q_heads(self, context_dim):
        D, K = self.latent_dim, self.num_flows
        R = self.num_reflections or D
        s = self.init_scale * math.sqrt(1.0 / context_dim)
        # random bias: a zero reflection vector has no direction
        self.v_head = _head(K * R * D, "reflections", self.dtype_policy, s, 1.0, self._seed(3))
        self.v_head.build((None, context_dim))

    def _q(self, h):
        D, K = self.latent_dim, self.num_flows
        R = self.num_reflections or D
        return householder_product(tf.reshape(self.v_head(h), [-1, K, R, D]))

    def get_config(self):
        return {**super().get_config(), "num_reflections": self.num_reflections}


@keras.saving.register_keras_serializable(package="nfzoo")
class AmortizedSylvesterTriangular(_AmortizedSylvester):
    """Triangular Sylvester: Q is the identity on even steps and the reversal permutation on
    odd steps (as alternating ``layers.SylvesterTriangular(reverse=...)``); R, R~, b amortised."""

    def _q(self, h):
        D = self.latent_dim
        eye = np.eye(D)
        q = np.stack([eye if k % 2 == 0 else eye[:, ::-1] for k in range(self.num_flows)])
        return tf.constant(q, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="nfzoo")
class AmortizedIAF(AmortizedFlow):
    """K IAF steps z <- z * exp(s) + m, (m, s) = MADE_k(z, h(x)) (``affine_forward``, the law
    of ``layers.InverseAutoregressive``); each MADE reads the context through an unmasked
    dense connection into its first hidden layer; orderings alternate natural / reversed.

    Args:
      hidden_units: MADE hidden sizes.
      log_scale_clamp: soft bound on s.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden_units: Sequence[int] = (64,),
        log_scale_clamp: float | None = 5.0,
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.log_scale_clamp = log_scale_clamp

    def _build_heads(self, context_dim):
        self.mades = []
        for k in range(self.num_flows):
            made = MADE(
                params_per_dim=2,
                hidden_units=self.hidden_units,
                ordering="natural" if k % 2 == 0 else "reversed",
                seed=self._seed(k),
                context_dim=context_dim,
                dtype=self.dtype_policy,
                name=f"made_{k}",
            )
            made.build((None, self.latent_dim))
            self.mades.append(made)

    def _step(self, k, z, h):
        return affine_forward(z, *affine_params(self.mades[k](z, h), self.log_scale_clamp))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "log_scale_clamp": self.log_scale_clamp,
        }


#: posterior name -> amortised flow class
POSTERIORS: dict[str, type[AmortizedFlow]] = {
    "none": NoFlow,
    "planar": AmortizedPlanar,
    "iaf": AmortizedIAF,
    "sylvester-orthogonal": AmortizedSylvesterOrthogonal,
    "sylvester-householder": AmortizedSylvesterHouseholder,
    "sylvester-triangular": AmortizedSylvesterTriangular,
}


def make_posterior(posterior: str, latent_dim: int, **kwargs) -> AmortizedFlow:
    """The amortised flow ``posterior`` (see ``POSTERIORS``) on R^latent_dim."""
    if posterior not in POSTERIORS:
        raise ValueError(f"Unknown posterior {posterior!r}; known: {', '.join(POSTERIORS)}.")
    return POSTERIORS[posterior](latent_dim, **kwargs)


@keras.saving.register_keras_serializable(package="nfzoo")
class FlowVAE(TrainableModel):
    """VAE on binary vectors with an amortised flow posterior (see the module docstring).

    Encoder: ``input_dim -> hidden_units`` (relu) = h(x); mu, log sigma and the flow's
    parameters are dense maps of h(x). Decoder: ``latent_dim -> reversed(hidden_units)``
    (relu) -> ``input_dim`` Bernoulli logits. ``fit`` maximises the single-sample
    reparameterised ELBO (loss = -ELBO, nats per example); ``evaluate`` reports it too.

    Args:
      input_dim: data dimension (64 for 8x8 digits).
      latent_dim: D.
      hidden_units: encoder hidden sizes (the decoder mirrors them).
      posterior: a name in ``POSTERIORS``.
      num_flows: K, flow steps of the posterior.
      posterior_kwargs: extra arguments of the posterior class.
      seed: seed of the initialisers and of the training noise.
    """

    objective = "-ELBO"

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
            keras.layers.Dense(
                u, "relu", kernel_initializer=glorot(seed_of(i)), dtype=dt, name=f"enc_{i}"
            )
            for i, u in enumerate(self.hidden_units)
        ]
        self.mu_layer = keras.layers.Dense(
            latent_dim, kernel_initializer=glorot(seed_of(10)), dtype=dt, name="mu"
        )
        self.log_sigma_layer = keras.layers.Dense(
            latent_dim, kernel_initializer=glorot(seed_of(11)), dtype=dt, name="log_sigma"
        )
        self.decoder_layers = [
            keras.layers.Dense(
                u, "relu", kernel_initializer=glorot(seed_of(20 + i)), dtype=dt, name=f"dec_{i}"
            )
            for i, u in enumerate(reversed(self.hidden_units))
        ]
        self.logits_layer = keras.layers.Dense(
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
        self._log_weights_fn = None
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

    def encode(self, x):
        """(mu, log sigma, flow parameters) of q(. | x) for x [B, input_dim]."""
        h = tf.convert_to_tensor(x, self.compute_dtype)
        for layer in self.encoder_layers:
            h = layer(h)
        log_sigma = soft_clamp(self.log_sigma_layer(h), LOG_SIGMA_CLAMP)
        return self.mu_layer(h), log_sigma, self.flow.flow_parameters(h)

    def decode(self, z):
        """Bernoulli logits of p(x | z), z [..., latent_dim]."""
        for layer in self.decoder_layers:
            z = layer(z)
        return self.logits_layer(z)

    def log_weights(self, x, eps):
        """log p(x, z) - log q(z | x) for z = flow(mu + sigma eps): x [B, input_dim],
        eps [..., B, latent_dim] standard normal; returns [..., B]."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        mu, log_sigma, params = self.encode(x)
        z0 = mu + tf.exp(log_sigma) * eps
        log_q0 = tf.reduce_sum(-0.5 * eps**2 - log_sigma - 0.5 * _LOG_2PI, axis=-1)
        z, log_det = self.flow.forward_and_log_det(z0, params)
        log_q = log_q0 - log_det
        log_prior = tf.reduce_sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=-1)
        logits = self.decode(z)
        labels = tf.broadcast_to(x, tf.shape(logits))
        log_lik = -tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1
        )
        return log_lik + log_prior - log_q

    def call(self, x):
        """Single-sample ELBO per example (fresh noise)."""
        eps = keras.random.normal(
            (tf.shape(x)[0], self.latent_dim), dtype=self.compute_dtype, seed=self.seed_generator
        )
        return self.log_weights(x, eps)

    # ---- Keras plumbing ----------------------------------------------------------------

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self(x, training=True))
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        self.loss_tracker.update_state(-tf.reduce_mean(self(x)))
        return {"loss": self.loss_tracker.result()}

    # ---- evaluation --------------------------------------------------------------------

    def sample_log_weights(self, x, num_samples: int, seed: int = 0, batch_size: int = 100):
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

    def elbo(self, x, num_samples: int = 1, seed: int = 0, batch_size: int = 100):
        """Per-example ELBO estimate (mean of ``num_samples`` log weights), nats."""
        return self.sample_log_weights(x, num_samples, seed, batch_size).mean(axis=0)

    def importance_weighted_nll(
        self, x, num_samples: int = 500, seed: int = 0, batch_size: int = 100
    ):
        """Per-example -L_k = -log (1/k sum_i p(x, z_i) / q(z_i | x)), z_i ~ q(. | x),
        k = ``num_samples`` (nats; an upper bound of -log p(x) in expectation)."""
        log_w = self.sample_log_weights(x, num_samples, seed, batch_size)
        m = log_w.max(axis=0)
        return -(m + np.log(np.mean(np.exp(log_w - m), axis=0)))

    def save_pretrained(self, directory, **kwargs):
        """Writes config.json, model.weights.h5 and card.md into ``directory`` (atomically);
        ``nfzoo.load(directory)`` reads it back. See ``nfzoo.pretrained.save_pretrained``."""
        from nfzoo.pretrained import save_pretrained

        return save_pretrained(self, directory, **kwargs)

    def get_config(self):
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
