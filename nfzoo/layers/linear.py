r"""Linear flows: permutations and invertible matrices, plain or parametrised by LU and QR.

    x = W z + b,  log|det dx/dz| = log|det W|

Each acts on the last axis. On vectors (``event_ndims=1``) that is a dense linear map; on
images (``event_ndims=3``, shape [H, W, C]) it is the same C x C map at every pixel, i.e. an
invertible 1x1 convolution (Kingma & Dhariwal 2018, Glow, arXiv:1807.03039, section 3.2), and
the log-det is multiplied by the number of pixels: log|det| = H * W * log|det W|.

* Permute: W a permutation matrix (Glow's "reverse" and "shuffle").
* InvertibleLinear: W a free C x C matrix, its log-det from the QR decomposition W = Q R
  (which XLA compiles), O(C^3) per call; the inverse needs W^-1 (O(C^3)). Glow's plain 1x1
  convolution.
* LULinear: W = P L U, P a fixed permutation, L unit lower-triangular, U upper-triangular
  with a positive diagonal exp(d), O(C). Glow's LU-decomposed 1x1 conv.
* QRLinear: W = Q R, Q = H_1 ... H_K a product of Householder reflections, R upper-triangular
  with a positive diagonal exp(d). Hoogeboom et al. 2019, arXiv:1901.11137; Tomczak &
  Welling 2016, arXiv:1611.09630.

Their log-dets, per position:

    Permute:           log|det W| = 0
    InvertibleLinear:  log|det W| = sum_i log|R_ii|   (W = Q R, |det Q| = 1)
    LULinear:          log|det W| = sum_i d_i         (W = P L U, L_ii = 1, U_ii = exp(d_i))
    QRLinear:          log|det W| = sum_i d_i         (W = Q R, R_ii = exp(d_i), |det Q| = 1,
                                                       H_k = I - 2 v_k v_k^T / |v_k|^2)

.. math::

    \text{every layer:} \quad & x = W z + b, \qquad
    \log\left|\det\frac{\partial x}{\partial z}\right| =
        H W \log\lvert\det W\rvert \quad (H W = 1 \text{ on vectors}) \\
    \text{Permute:} \quad & \log\lvert\det W\rvert = 0 \\
    \text{InvertibleLinear:} \quad & \log\lvert\det W\rvert = \sum_i \log\lvert R_{ii}\rvert,
    \qquad W = Q R, \ \lvert\det Q\rvert = 1 \\
    \text{LULinear:} \quad & \log\lvert\det W\rvert = \sum_i d_i,
    \qquad W = P L U, \ L_{ii} = 1, \ U_{ii} = e^{d_i} \\
    \text{QRLinear:} \quad & \log\lvert\det W\rvert = \sum_i d_i,
    \qquad W = Q R, \ R_{ii} = e^{d_i}, \ Q = H_1 \cdots H_K,
    \ H_k = I - \frac{2 v_k v_k^\top}{\lVert v_k \rVert^2}

Cost: forward one C x C matmul per position; inverse two triangular solves (LU), one solve and
one matmul (QR) or one matmul by W^-1 (plain); weight-only work (assembling W) once per call,
frozen at export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import tensorflow as tf

from nfzoo.bijector_layer import BijectorLayer, register_layer
from nfzoo.ops import batch_constant, fixed_seed, householder_product

__all__ = ["InvertibleLinear", "LULinear", "Permute", "QRLinear"]


def _random_rotation(dim: int, seed: int | None) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian matrix, signs fixed) from a seed."""
    q, r = np.linalg.qr(np.random.RandomState(seed).randn(dim, dim))
    return q * np.sign(np.diag(r))[None, :]


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
      event_ndims: 1 for vectors, 3 for images (permutes channels).
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
        dim = event_shape[-1]
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
        return tf.gather(z, self._perm, axis=-1), batch_constant(0.0, z, self.event_ndims)

    def _inverse_and_log_det(self, x):
        return tf.gather(x, self._inverse_perm, axis=-1), batch_constant(0.0, x, self.event_ndims)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "permutation": self.permutation,
            "seed": self.seed,
            "event_ndims": self.event_ndims,
        }


class _Linear(BijectorLayer):
    """Shared parts of the matrix layers: seed, bias, positions and the constant log-det."""

    constant_jacobian = True

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = fixed_seed(seed)

    def _channels(self, event_shape) -> int:
        """The matrix size C (last axis); records the number of positions sharing the matrix
        (pixels of an image; 1 for a vector)."""
        self._positions = int(np.prod(event_shape[:-1], dtype=np.int64))
        return event_shape[-1]

    def log_det_per_position(self) -> tf.Tensor:
        """log|det W| (one position)."""
        raise NotImplementedError

    def _log_det(self, like):
        value = self._positions * self.log_det_per_position()
        return batch_constant(value, like, self.event_ndims)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed, "event_ndims": self.event_ndims}


@register_layer
class InvertibleLinear(_Linear):
    """x = W z + b with W a free invertible matrix; log|det dx/dz| = log|det W| (times the
    number of positions on images: Glow's plain invertible 1x1 convolution). Initialised at a
    random rotation, as Glow.

    Cost: forward one matmul per position plus O(C^3) per call for log|det W| (QR);
    inverse one matmul by W^-1 (O(C^3) per call). Kingma & Dhariwal 2018, arXiv:1807.03039.
    Nothing keeps W invertible during training except the likelihood itself (log|det W| ->
    -inf as W becomes singular); LULinear and QRLinear keep it invertible by construction.

    Args:
      seed: seed of the initial rotation (fixed at construction if None).
      event_ndims: 1 for vectors, 3 for images.
    """

    def _build_event(self, event_shape):
        dim = self._channels(event_shape)
        self.kernel = self.add_weight_from_array("kernel", _random_rotation(dim, self.seed))
        self.bias = self.add_weight_from_array("bias", np.zeros(dim))

    def weight_matrix(self) -> tf.Tensor:
        """The matrix W."""
        return tf.convert_to_tensor(self.kernel)

    def log_det_per_position(self) -> tf.Tensor:
        # |det W| = |det R| for W = Q R; XLA compiles QR (not slogdet or LU)
        r = tf.linalg.qr(self.weight_matrix())[1]
        return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))

    def _forward_and_log_det(self, z):
        return tf.linalg.matvec(self.weight_matrix(), z) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        w_inv = tf.linalg.inv(self.weight_matrix())
        return tf.linalg.matvec(w_inv, x - self.bias), -self._log_det(x)


class _TriangularLinear(_Linear):
    """Shared parts of LULinear and QRLinear: strictly-triangular weights, log-diagonal."""

    def log_det_per_position(self) -> tf.Tensor:
        return tf.reduce_sum(self.log_diag)

    def _upper(self):
        """R or U: strictly-upper weights plus the diagonal exp(log_diag)."""
        strict = tf.linalg.band_part(self.upper, 0, -1) - tf.linalg.band_part(self.upper, 0, 0)
        return strict + tf.linalg.diag(tf.exp(self.log_diag))


@register_layer
class LULinear(_TriangularLinear):
    """x = P L U z + b with L unit lower-triangular and U upper-triangular with diagonal
    exp(d); log|det dx/dz| = sum d. Initialised from the LU factors of a random rotation (as
    Glow), so it starts volume-preserving; P is a non-trainable weight.

    Cost: forward O(D^2) per vector; inverse two triangular solves, O(D^2) per vector.
    Kingma & Dhariwal 2018, arXiv:1807.03039.

    Args:
      seed: seed of the initial rotation (fixed at construction if None).
      event_ndims: 1 for vectors, 3 for images (an invertible 1x1 convolution).
    """

    def _build_event(self, event_shape):
        dim = self._channels(event_shape)
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
        dim = self.event_dim
        strict = tf.linalg.band_part(self.lower, -1, 0) - tf.linalg.band_part(self.lower, 0, 0)
        return strict + tf.eye(dim, dtype=self.lower.dtype)

    def weight_matrix(self) -> tf.Tensor:
        """W = P L U."""
        lu = tf.matmul(self._unit_lower(), self._upper())
        return tf.gather(lu, self.permutation, axis=0)

    def _forward_and_log_det(self, z):
        return tf.linalg.matvec(self.weight_matrix(), z) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        inverse_perm = tf.math.invert_permutation(self.permutation)
        v = tf.gather(x - self.bias, inverse_perm, axis=-1)  # P^T (x - b)
        v = _solve_triangular(self._unit_lower(), v, lower=True)
        return _solve_triangular(self._upper(), v, lower=False), -self._log_det(x)


@register_layer
class QRLinear(_TriangularLinear):
    """x = Q R z + b with Q = H_1 ... H_K (Householder reflections
    ``H_k = I - 2 v_k v_k^T / |v_k|^2``) and R upper-triangular with diagonal exp(d);
    log|det dx/dz| = sum d. Initialised with random reflections and R = I (a random rotation
    or reflection).

    Cost: forward O(D^2) per vector; inverse one matmul by Q^T and one triangular solve;
    assembling Q costs O(K D^2) per call. Hoogeboom et al. 2019, arXiv:1901.11137.

    Args:
      num_reflections: K, the number of Householder reflections (default D).
      seed: seed of the initial reflection vectors (fixed at construction if None).
      event_ndims: 1 for vectors, 3 for images (an invertible 1x1 convolution).
    """

    def __init__(self, num_reflections: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_reflections = num_reflections

    def _build_event(self, event_shape):
        dim = self._channels(event_shape)
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
        return tf.linalg.matvec(self.weight_matrix(), z) + self.bias, self._log_det(z)

    def _inverse_and_log_det(self, x):
        v = tf.linalg.matvec(self.orthogonal_matrix(), x - self.bias, transpose_a=True)
        return _solve_triangular(self._upper(), v, lower=False), -self._log_det(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_reflections": self.num_reflections}
