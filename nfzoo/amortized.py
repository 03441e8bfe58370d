"""Amortised flows: K flow steps on R^D whose parameters are per-example outputs of an
encoder, the approximate posteriors of ``nfzoo.vae.FlowVAE`` (van den Berg et al. 2018,
arXiv:1803.05649; Kingma et al. 2016, arXiv:1606.04934; Rezende & Mohamed 2015,
arXiv:1505.05770).

Posteriors (``POSTERIORS``): "none" (diagonal Gaussian), "planar", "iaf",
"sylvester-orthogonal", "sylvester-householder", "sylvester-triangular". Each reuses the
transform of the corresponding layer, written once as a pure function of (z, parameters):
``planar_forward`` (nfzoo.layers.planar_radial), ``sylvester_forward``, ``orthogonalize``
(nfzoo.layers.sylvester), ``householder_product`` (nfzoo.ops), ``affine_params`` /
``affine_forward`` and ``MADE`` with a context input (nfzoo.layers.autoregressive,
nfzoo.nets). The layers call them with their weights (no leading axes); the posteriors here
with per-example parameters (leading axis B), and samples z of shape [..., B, D] broadcast
against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nfzoo.layers.autoregressive import affine_forward, affine_params
from nfzoo.layers.planar_radial import planar_forward
from nfzoo.layers.sylvester import orthogonalize, sylvester_forward
from nfzoo.nets import MADE, Dense
from nfzoo.ops import householder_product
from nfzoo.registry import Registry

__all__ = [
    "POSTERIORS",
    "AmortizedFlow",
    "AmortizedIAF",
    "AmortizedPlanar",
    "AmortizedSylvesterHouseholder",
    "AmortizedSylvesterOrthogonal",
    "AmortizedSylvesterTriangular",
    "NoFlow",
    "make_posterior",
]


def _head(units: int, name: str, dtype, scale: float, bias_scale: float = 0.0, seed=None):
    """A Dense map h(x) -> flow parameters: small random kernel (near the identity, but not
    at the saddle where planar and Sylvester have zero gradient), bias zero or random."""
    bias = (
        keras.initializers.RandomNormal(0.0, bias_scale, seed=seed)
        if bias_scale
        else keras.initializers.Zeros()
    )
    return Dense(
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
      latent_dim: D, the size of z.
      num_flows: K, the number of flow steps.
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

    def build(self, context_shape: Sequence[int | None]) -> None:
        context_dim = context_shape[-1]
        if context_dim is None:
            raise ValueError(
                f"{type(self).__name__} needs a known context size; received shape {context_shape}."
            )
        self.context_dim = int(context_dim)
        self._build_heads(self.context_dim)

    def _build_heads(self, context_dim: int) -> None:
        """Creates the layers that map the context to parameters."""

    def flow_parameters(self, h: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, ...]:
        """Per-example parameters of every step from the context h [B, H] (a tensor, or a
        tuple of them, as the subclass's ``_step`` reads them)."""
        return h

    def forward_and_log_det(
        self, z: tf.Tensor, params: tf.Tensor | tuple[tf.Tensor, ...]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        total = tf.zeros(tf.shape(z)[:-1], z.dtype)
        for k in range(self.num_flows):
            z, ldj = self._step(k, z, params)
            total = total + ldj
        return z, total

    def _step(self, k, z, params):
        raise NotImplementedError

    def call(self, z: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.forward_and_log_det(z, self.flow_parameters(h))

    def get_config(self) -> dict[str, Any]:
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

    def flow_parameters(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
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

    def flow_parameters(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
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

    def get_config(self) -> dict[str, Any]:
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

    def get_config(self) -> dict[str, Any]:
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

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "log_scale_clamp": self.log_scale_clamp,
        }


#: posterior name -> amortised flow class
POSTERIORS: Registry[type[AmortizedFlow]] = Registry("posterior")
for _name, _cls in (
    ("none", NoFlow),
    ("planar", AmortizedPlanar),
    ("iaf", AmortizedIAF),
    ("sylvester-orthogonal", AmortizedSylvesterOrthogonal),
    ("sylvester-householder", AmortizedSylvesterHouseholder),
    ("sylvester-triangular", AmortizedSylvesterTriangular),
):
    POSTERIORS.add(_name, _cls)


def make_posterior(posterior: str, latent_dim: int, **kwargs) -> AmortizedFlow:
    """The amortised flow ``posterior`` (see ``POSTERIORS``) on R^latent_dim."""
    return POSTERIORS.get(posterior)(latent_dim, **kwargs)
