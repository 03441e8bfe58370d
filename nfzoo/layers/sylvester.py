r"""Sylvester flows (van den Berg et al. 2018, arXiv:1803.05649).

    x = z + Q R h(R~ Q^T z + b),   h = tanh

with Q in R^{D x M} having orthonormal columns, R and R~ upper-triangular M x M, b in R^M.
By Sylvester's determinant identity det(I_D + A B) = det(I_M + B A) and Q^T Q = I_M,

    log|det dx/dz| = sum_i log(1 + h'(a_i) R~_ii R_ii),   a = R~ Q^T z + b

.. math::

    x = z + Q R\, h(\tilde R Q^\top z + b), \qquad
    \det\frac{\partial x}{\partial z}
        = \det\left(I_M + \operatorname{diag}(h'(a))\, \tilde R R\right)
        = \prod_{i=1}^{M} \left(1 + h'(a_i)\, \tilde R_{ii} R_{ii}\right),
    \qquad a = \tilde R Q^\top z + b

The diagonals are tanh of free parameters, so R~_ii R_ii > -1 and each factor is positive
(0 < h' <= 1): the map is invertible. Three ways to get Q:

* SylvesterOrthogonal: Q from a free D x M matrix by the iterative orthogonalisation
  Q <- Q (I + (I - Q^T Q) / 2) (Kovarik / Bjorck), run until ``max|Q^T Q - I|`` is at rounding
  level, so the log-det formula holds to the last digits.
* SylvesterHouseholder: Q = H_1 ... H_K, K Householder reflections (M = D).
* SylvesterTriangular: Q a fixed permutation, identity or reversal (M = D); alternating it
  between layers lets R act as lower- and upper-triangular.

Cost: forward O(D M) per vector plus O(D M^2) weight-only work per call. No closed-form
inverse exists: ``inverse`` raises NotImplementedError; use ``generate_and_log_prob``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import fixed_seed, householder_product

__all__ = [
    "SylvesterHouseholder",
    "SylvesterOrthogonal",
    "SylvesterTriangular",
    "sylvester_forward",
]

#: cap on the orthogonalisation sweeps (convergence is quadratic once ``|Q^T Q - I| < 1``)
MAX_ORTHOGONALISATION_STEPS = 100


def orthogonalize(q_raw: tf.Tensor) -> tf.Tensor:
    """The orthogonal polar factor of ``q_raw`` [..., D, M] (M <= D): columns orthonormal.

    Iterates Q <- Q (I + (I - Q^T Q) / 2) (Kovarik / Bjorck) until max|Q^T Q - I| is at
    rounding level over every matrix of the batch. Shared by ``SylvesterOrthogonal`` (one
    matrix) and ``nfzoo.amortized.AmortizedSylvesterOrthogonal`` (one per example)."""
    m = q_raw.shape[-1]
    eye = tf.eye(m, dtype=q_raw.dtype)
    # Dividing by the Frobenius norm puts every singular value in (0, 1], inside the
    # region where the iteration converges to the orthogonal polar factor.
    q0 = q_raw / tf.norm(q_raw, axis=[-2, -1], keepdims=True)
    tol = 1e-14 if q_raw.dtype == tf.float64 else 1e-6

    def error(q):
        return tf.reduce_max(tf.abs(tf.matmul(q, q, transpose_a=True) - eye))

    def step(i, q):
        return i + 1, tf.matmul(q, eye + 0.5 * (eye - tf.matmul(q, q, transpose_a=True)))

    _, q = tf.while_loop(
        lambda i, q: error(q) > tol,
        step,
        (tf.constant(0), q0),
        maximum_iterations=MAX_ORTHOGONALISATION_STEPS,
    )
    return q


def triangular_with_bounded_diagonal(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(R, diag R) from a free [..., M, M] matrix: its strict upper triangle, and tanh of its
    diagonal on the diagonal (``|R_ii| < 1``, so R_ii R~_ii > -1)."""
    strict = tf.linalg.band_part(raw, 0, -1) - tf.linalg.band_part(raw, 0, 0)
    diag = tf.tanh(tf.linalg.diag_part(raw))
    return strict + tf.linalg.diag(diag), diag


def sylvester_forward(
    z: tf.Tensor, q: tf.Tensor, r1_raw: tf.Tensor, r2_raw: tf.Tensor, b: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """x = z + Q R h(R~ Q^T z + b) and log|det dx/dz| = sum_i log(1 + h'(a_i) R~_ii R_ii).

    The one implementation of the Sylvester map. ``q`` [..., D, M] has orthonormal columns;
    ``r1_raw``, ``r2_raw`` [..., M, M] are free matrices made upper-triangular with a bounded
    diagonal here (``triangular_with_bounded_diagonal``); ``b`` is [..., M]. The leading axes
    are empty for the layers (their weights) and [B] for ``nfzoo.vae``'s amortised posteriors
    (per-example parameters); ``z`` [..., D] broadcasts against them (e.g. [k, B, D])."""
    r1, d1 = triangular_with_bounded_diagonal(r1_raw)
    r2, d2 = triangular_with_bounded_diagonal(r2_raw)
    a = tf.linalg.matvec(r2, tf.linalg.matvec(q, z, transpose_a=True)) + b
    h = tf.tanh(a)
    x = z + tf.linalg.matvec(q, tf.linalg.matvec(r1, h))
    log_det = tf.reduce_sum(tf.math.log1p((1.0 - h**2) * d1 * d2), axis=-1)
    return x, log_det


class _Sylvester(BijectorLayer):
    """Shared body: R, R~, b and the forward map; subclasses provide Q."""

    inverse_unavailable = (
        "x = z + Q R tanh(R~ Q^T z + b) has no closed-form inverse (van den Berg et al. 2018)"
    )

    def __init__(self, init_scale: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.init_scale = float(init_scale)
        self.seed = fixed_seed(seed)

    def _num_vectors(self, dim: int) -> int:
        return dim

    def _build_event(self, event_shape):
        (dim,) = event_shape
        m = self._num_vectors(dim)
        rng = np.random.RandomState(self.seed)

        self.r1 = self.add_weight_from_array("r", self.init_scale * np.triu(rng.randn(m, m)))
        self.r2 = self.add_weight_from_array("r_tilde", self.init_scale * np.triu(rng.randn(m, m)))
        self.b = self.add_weight_from_array("b", np.zeros(m))
        self._build_q(dim, m, rng)

    def _build_q(self, dim: int, m: int, rng: np.random.RandomState) -> None:
        raise NotImplementedError

    def q_matrix(self) -> tf.Tensor:
        """Q, D x M with orthonormal columns."""
        raise NotImplementedError

    def _triangular(self, raw):
        return triangular_with_bounded_diagonal(raw)

    def _forward_and_log_det(self, z):
        return sylvester_forward(z, self.q_matrix(), self.r1, self.r2, self.b)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "init_scale": self.init_scale, "seed": self.seed}


@register_layer
class SylvesterOrthogonal(_Sylvester):
    """Orthogonal Sylvester flow: Q (D x M) by iterative orthogonalisation of a free matrix.

    Args:
      num_vectors: M <= D, the number of orthonormal columns (default D).
      init_scale: scale of the initial R, R~ (small: near the identity).
      seed: seed of the initial weights.
    """

    def __init__(self, num_vectors: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_vectors = num_vectors

    def _num_vectors(self, dim):
        m = self.num_vectors or dim
        if not 1 <= m <= dim:
            raise ValueError(
                f"SylvesterOrthogonal needs 1 <= num_vectors <= D = {dim}; received {m}."
            )
        return m

    def _build_q(self, dim, m, rng):
        self.q_raw = self.add_weight_from_array("q_raw", rng.randn(dim, m))

    def q_matrix(self) -> tf.Tensor:
        return orthogonalize(self.q_raw)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_vectors": self.num_vectors}


@register_layer
class SylvesterHouseholder(_Sylvester):
    """Householder Sylvester flow: Q = H_1 ... H_K, ``H_k = I - 2 v_k v_k^T / |v_k|^2`` (M = D).

    Args:
      num_reflections: K (default D).
      init_scale, seed: as SylvesterOrthogonal.
    """

    def __init__(self, num_reflections: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_reflections = num_reflections

    def _build_q(self, dim, m, rng):
        k = self.num_reflections or dim
        self.reflections = self.add_weight_from_array("reflections", rng.randn(k, dim))

    def q_matrix(self) -> tf.Tensor:
        return householder_product(self.reflections)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_reflections": self.num_reflections}


@register_layer
class SylvesterTriangular(_Sylvester):
    """Triangular Sylvester flow: Q = I or the reversal permutation (M = D).

    Args:
      reverse: use the reversal permutation for Q (alternate it between layers).
      init_scale, seed: as SylvesterOrthogonal.
    """

    def __init__(self, reverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.reverse = bool(reverse)

    def _build_q(self, dim, m, rng):
        q = np.eye(dim)
        self._q = q[:, ::-1].copy() if self.reverse else q

    def q_matrix(self) -> tf.Tensor:
        return tf.constant(self._q, dtype=self.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reverse": self.reverse}
