"""Linear flows: permutations and invertible matrices parametrised by LU and QR.

    x = W z + b,  log|det dx/dz| = log|det W|

* Permute: W a permutation matrix, log|det| = 0.
* LULinear: W = P L U, P a fixed permutation, L unit lower-triangular, U upper-triangular
  with a positive diagonal exp(d): log|det W| = sum d. Kingma & Dhariwal 2018 (Glow),
  arXiv:1807.03039, section 3.2.
* QRLinear: W = Q R, Q a product of Householder reflections H_k = I - 2 v v^T / |v|^2,
  R upper-triangular with a positive diagonal exp(d): log|det W| = sum d
  (|det Q| = 1). Hoogeboom et al. 2019, arXiv:1901.11137; Tomczak & Welling 2016,
  arXiv:1611.09630.

Cost: forward one D x D matmul; inverse two triangular solves (LU) or one solve and one
matmul (QR); weight-only work (assembling W) once per call, frozen at export.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import batch_constant, fixed_seed, householder_product


def _random_rotation(dim: int, seed: int | None) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian matrix, signs fixed) from a seed."""
    q, r = np.linalg.qr(np.random.RandomState(seed).randn(dim, dim))
    return q * np.sign(np.diag(r))[None, :]


def _matvec(matrix: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """matrix @ u for every vector u in the batch (u has shape [..., D])."""
    return tf.linalg.matvec(matrix, u)


def _solve_triangular(matrix: tf.Tensor, u: tf.Tensor, lower: bool) -> tf.Tensor:
    """matrix^-1 u for a batch of vectors u of shape [..., D]."""
    flat = tf.reshape(u, [-1, tf.shape(u)[-1]])
    sol = tf.linalg.triangular_solve(matrix, tf.transpose(flat), lower=lower)
    return tf.reshape(tf.transpose(sol), tf.shape(u))


@register_layer
class Permute(BijectorLayer):
    """Fixed permutation of the last axis: x[..., i] = z[..., perm[i]]; log|det| = 0.

    Args:
      permutation: "reversed", "random" (seeded) or an explicit permutation of 0..D-1.
      seed: seed of the random permutation (fixed at construction if None).
    """

    constant_jacobian = True

    def __init__(
        self, permutation: str | Sequence[int] = "reversed", seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(permutation, str) and permutation not in ("reversed", "random"):
            raise ValueError(
                f"Permute expects 'reversed', 'random' or a permutation of 0..D-1; "
                f"received {permutation!r}."
            )
        if permutation == "random":
            seed = fixed_seed(seed)  # the config alone reproduces the permutation
        self.permutation = (
            permutation if isinstance(permutation, str) else [int(p) for p in permutation]
        )
        self.seed = seed

    def _build_event(self, event_shape):
        (dim,) = event_shape
        if self.permutation == "reversed":
            perm = np.arange(dim)[::-1]
        elif self.permutation == "random":
            perm = np.random.RandomState(self.seed).permutation(dim)
        else:
            perm = np.asarray(self.permutation)
            if sorted(perm.tolist()) != list(range(dim)):
                raise ValueError(
                    f"Permute expects a permutation of 0..{dim - 1}; received {perm.tolist()}."
                )
        self._perm = perm.astype(np.int32)
        self._inverse_perm = np.argsort(perm).astype(np.int32)

    def _forward_and_log_det(self, z):
        return tf.gather(z, self._perm, axis=-1), batch_constant(0.0, z, 1)

    def _inverse_and_log_det(self, x):
        return tf.gather(x, self._inverse_perm, axis=-1), batch_constant(0.0, x, 1)

    def get_config(self):
        return {**super().get_config(), "permutation": self.permutation, "seed": self.seed}


class _TriangularLinear(BijectorLayer):
    """Shared parts of LULinear and QRLinear: bias, strictly-triangular weights, log-diagonal."""

    constant_jacobian = True

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = fixed_seed(seed)

    def _upper(self):
        """R or U: strictly-upper weights plus the diagonal exp(log_diag)."""
        strict = tf.linalg.band_part(self.upper, 0, -1) - tf.linalg.band_part(self.upper, 0, 0)
        return strict + tf.linalg.diag(tf.exp(self.log_diag))

    def _log_det(self, like):
        return batch_constant(tf.reduce_sum(self.log_diag), like, 1)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@register_layer
class LULinear(_TriangularLinear):
    """x = P L U z + b with L unit lower-triangular and U upper-triangular with diagonal
    exp(d); log|det dx/dz| = sum d. Initialised from the LU factors of a random rotation (as
    Glow), so it starts volume-preserving; P is a non-trainable weight.

    Cost: forward O(D^2) per vector; inverse two triangular solves, O(D^2) per vector.
    Kingma & Dhariwal 2018, arXiv:1807.03039.

    Args:
      seed: seed of the initial rotation (fixed at construction if None).
    """

    def _build_event(self, event_shape):
        (dim,) = event_shape
        p, lower, upper = scipy.linalg.lu(_random_rotation(dim, self.seed))
        sign = np.sign(np.diag(upper))
        upper = upper * sign[None, :]  # W0 = P L U diag(sign): still a rotation, diag(U) > 0
        self.lower = self.add_weight_from_array("lower", lower)
        self.upper = self.add_weight_from_array("upper", upper)
        self.log_diag = self.add_weight_from_array("log_diag", np.log(np.diag(upper)))
        self.bias = self.add_weight_from_array("bias", np.zeros(dim))
        self.permutation = self.add_weight_from_array(  # (P v)[i] = v[perm[i]]
            "permutation", np.argmax(p, axis=1), trainable=False, dtype="int32"
        )

    def _unit_lower(self):
        dim = self.event_shape[-1]
        strict = tf.linalg.band_part(self.lower, -1, 0) - tf.linalg.band_part(self.lower, 0, 0)
        return strict + tf.eye(dim, dtype=self.lower.dtype)

    def weight_matrix(self) -> tf.Tensor:
        """W = P L U."""
        lu = tf.matmul(self._unit_lower(), self._upper())
        return tf.gather(lu, self.permutation, axis=0)

    def _forward_and_log_det(self, z):
        return _matvec(self.weight_matrix(), z) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        inverse_perm = tf.math.invert_permutation(self.permutation)
        v = tf.gather(x - self.bias, inverse_perm, axis=-1)  # P^T (x - b)
        v = _solve_triangular(self._unit_lower(), v, lower=True)
        return _solve_triangular(self._upper(), v, lower=False), -self._log_det(x)


@register_layer
class QRLinear(_TriangularLinear):
    """x = Q R z + b with Q = H_1 ... H_K (Householder reflections H_k = I - 2 v_k v_k^T /
    |v_k|^2) and R upper-triangular with diagonal exp(d); log|det dx/dz| = sum d.
    Initialised with random reflections and R = I (a random rotation or reflection).

    Cost: forward O(D^2) per vector; inverse one matmul by Q^T and one triangular solve;
    assembling Q costs O(K D^2) per call. Hoogeboom et al. 2019, arXiv:1901.11137.

    Args:
      num_reflections: K, the number of Householder reflections (default D).
      seed: seed of the initial reflection vectors (fixed at construction if None).
    """

    def __init__(self, num_reflections: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_reflections = num_reflections

    def _build_event(self, event_shape):
        (dim,) = event_shape
        k = self.num_reflections or dim
        self.reflections = self.add_weight_from_array(
            "reflections", np.random.RandomState(self.seed).randn(k, dim)
        )
        self.upper = self.add_weight_from_array("upper", np.zeros((dim, dim)))
        self.log_diag = self.add_weight_from_array("log_diag", np.zeros(dim))
        self.bias = self.add_weight_from_array("bias", np.zeros(dim))

    def orthogonal_matrix(self) -> tf.Tensor:
        """Q = H_1 H_2 ... H_K."""
        return householder_product(self.reflections)

    def weight_matrix(self) -> tf.Tensor:
        """W = Q R."""
        return tf.matmul(self.orthogonal_matrix(), self._upper())

    def _forward_and_log_det(self, z):
        return _matvec(self.weight_matrix(), z) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        v = tf.linalg.matvec(self.orthogonal_matrix(), x - self.bias, transpose_a=True)
        return _solve_triangular(self._upper(), v, lower=False), -self._log_det(x)

    def get_config(self):
        return {**super().get_config(), "num_reflections": self.num_reflections}
