"""Conditioner networks, written with Keras 3 layers. The last layer of each starts at zero,
so that every flow layer that uses one starts as the identity (or a pure shift/permutation).

* ``Dense``: ``keras.layers.Dense`` whose product is ``nfzoo.ops.matmul`` (a faster kernel
  gradient under XLA on CPU); the dense layer of every network here.
* ``MLP``: dense layers for coupling conditioners.
* ``ConvNet``: Glow's small convolutional conditioner for image couplings,
  3x3 conv -> 1x1 conv -> zero-initialised 3x3 conv (Kingma & Dhariwal 2018, arXiv:1807.03039).
* ``MADE``: masked autoencoder for distribution estimation (Germain et al. 2015,
  arXiv:1502.03509): dense layers whose weights are multiplied by binary masks so that the
  outputs for input dimension i depend only on the inputs that precede i in the ordering.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from nfzoo import _compat
from nfzoo.ops import fixed_seed, matmul

__all__ = ["MADE", "MLP", "ConvNet", "Dense", "hidden_units_list", "made_degrees", "made_masks"]


def hidden_units_list(hidden_units: Iterable[int], who: str) -> list[int]:
    """``hidden_units`` as a list of positive ints (empty: no hidden layer); a ValueError
    names anything else (a bare int, zeros, floats)."""
    try:
        units = list(hidden_units)
    except TypeError:
        units = None
    if units is None or any(
        isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in units
    ):
        raise ValueError(
            f"{who}: hidden_units must be a sequence of positive integers such as [64, 64]; "
            f"received {hidden_units!r}."
        )
    return [int(h) for h in units]


class Dense(keras.layers.Dense):
    """``keras.layers.Dense`` (same arguments, weights and saved form) whose product is
    ``nfzoo.ops.matmul``: under XLA its kernel gradient is computed in the orientation that
    XLA's CPU dot runs fastest. Quantised or LoRA layers use Keras's own ``call``."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not _compat.dense_is_plain(self):
            return super().call(inputs, training=training)
        x = matmul(inputs, self.kernel)
        if self.bias is not None:
            x = x + self.bias
        if self.activation is not None:
            x = self.activation(x)
        return x


class _Stack(keras.layers.Layer):
    """Hidden layers (``self.hidden``) then a zero-initialised output layer (``self.out``):
    the shape of MLP and ConvNet."""

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.out.build(shape)

    def call(self, x):
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


@keras.saving.register_keras_serializable(package="nfzoo")
class MLP(_Stack):
    """Dense network ``in -> hidden_units... -> output_dim``; the output layer is zero-initialised.

    Args:
      output_dim: number of outputs.
      hidden_units: sizes of the hidden layers.
      activation: activation of the hidden layers (a Keras activation name).
    """

    def __init__(
        self,
        output_dim: int,
        hidden_units: Sequence[int] = (64, 64),
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.hidden_units = hidden_units_list(hidden_units, "MLP")
        self.activation = activation
        self.hidden = [
            Dense(h, activation=activation, dtype=self.dtype_policy, name=f"dense_{i}")
            for i, h in enumerate(self.hidden_units)
        ]
        self.out = Dense(
            self.output_dim,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="dense_out",
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        }


def made_degrees(
    input_dim: int, hidden_units: Sequence[int], ordering: str | Sequence[int], seed: int | None
) -> list[np.ndarray]:
    """Degrees of the MADE units: ``[input degrees, hidden degrees per layer...]``.

    Input degrees are the ordering, a permutation of 1..D ("natural": 1..D, "reversed": D..1,
    "random": a seeded permutation, or an explicit sequence). Hidden units cycle evenly through
    1..D-1, so every degree is represented (Germain et al. 2015, section 4)."""
    D = int(input_dim)
    if isinstance(ordering, str):
        if ordering == "natural":
            order = np.arange(1, D + 1)
        elif ordering == "reversed":
            order = np.arange(D, 0, -1)
        elif ordering == "random":
            order = np.random.RandomState(seed).permutation(D) + 1
        else:
            raise ValueError(
                f"MADE ordering must be 'natural', 'reversed', 'random' or a permutation of "
                f"1..{D}; received {ordering!r}."
            )
    else:
        order = np.asarray(ordering, dtype=np.int64)
        if sorted(order.tolist()) != list(range(1, D + 1)):
            raise ValueError(
                f"MADE ordering must be a permutation of 1..{D}; received {list(ordering)}."
            )
    degrees = [order]
    low = min(1, D - 1)
    for h in hidden_units:
        degrees.append(np.arange(h) % max(1, D - 1) + low)
    return degrees


def made_masks(degrees: list[np.ndarray], params_per_dim: int) -> list[np.ndarray]:
    """Binary masks ``[in->h1, h1->h2, ..., hL->out]``: a unit may see units of degree <= its
    own; an output of input i (degree d_i) sees only hidden units of degree < d_i, which makes
    the Jacobian of each output block strictly triangular in the ordering."""
    masks = []
    for d_in, d_out in itertools.pairwise(degrees):
        masks.append((d_out[None, :] >= d_in[:, None]).astype(np.float32))
    out_degrees = np.tile(degrees[0], params_per_dim)  # output unit p*D + i has degree d_i
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype(np.float32))
    return masks


class MadeWeights(NamedTuple):
    """The weights of a MADE pass: masked kernels W * M and biases, input to output, and the
    kernel of the context into the first hidden layer (None without a context)."""

    kernels: list
    biases: list
    context_kernel: Any


def _degree_layout(degrees: np.ndarray, input_dim: int) -> tuple[np.ndarray, int]:
    """The units of one MADE hidden layer sorted by degree (0..D-1), each degree's block
    padded to the widest: (the unit at each position, -1 for padding; the block width)."""
    groups = [np.flatnonzero(degrees == d) for d in range(input_dim)]
    width = max(1, *(len(g) for g in groups))
    index = -np.ones((input_dim, width), np.int64)
    for d, g in enumerate(groups):
        index[d, : len(g)] = g
    return index.reshape(-1), width


def _take(matrix: tf.Tensor, index: np.ndarray, axis: int) -> tf.Tensor:
    """``matrix`` gathered at ``index`` along ``axis`` (0 or 1), zeros where index is -1."""
    if (index >= 0).all():
        return tf.gather(matrix, index, axis=axis)
    zero = tf.zeros_like(tf.gather(matrix, [0], axis=axis))
    padded = tf.concat([matrix, zero], axis=axis)
    return tf.gather(padded, np.where(index >= 0, index, matrix.shape[axis]), axis=axis)


@keras.saving.register_keras_serializable(package="nfzoo")
class MADE(keras.layers.Layer):
    """Masked autoencoder: maps x in R^D to ``params_per_dim`` vectors in R^D, where the outputs
    for dimension i depend only on the dimensions before i in ``ordering``.

    Output shape ``[..., params_per_dim, D]``. Masks are stored as non-trainable weights, so a
    saved model keeps its ordering even if the random generator changes. Each weight matrix is
    multiplied by its mask once per call (``W * M``, one matmul per layer).

    Args:
      params_per_dim: outputs per input dimension (2 for an affine law: shift, log-scale).
      hidden_units: sizes of the hidden layers.
      ordering: "natural", "reversed", "random" (seeded) or an explicit permutation of 1..D.
      activation: activation of the hidden layers.
      seed: seed of the random ordering and the weight initialisers.
      context_dim: if set, ``call(x, context)`` also reads a context vector [..., context_dim]
        through an unmasked dense connection into the first hidden layer (Kingma et al. 2016,
        arXiv:1606.04934: IAF steps conditioned on the encoder's h(x)). The context may have
        fewer leading axes than x (it broadcasts). Outputs stay autoregressive in x.
    """

    def __init__(
        self,
        params_per_dim: int = 2,
        hidden_units: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        activation: str = "relu",
        seed: int | None = None,
        context_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.params_per_dim = int(params_per_dim)
        self.hidden_units = hidden_units_list(hidden_units, "MADE")
        self.context_dim = None if context_dim is None else int(context_dim)
        if self.context_dim is not None and not self.hidden_units:
            raise ValueError("MADE with a context needs at least one hidden layer.")
        self.ordering = ordering if isinstance(ordering, str) else [int(o) for o in ordering]
        self.activation = activation
        self.activation_fn = keras.activations.get(activation)
        self.seed = fixed_seed(seed) if ordering == "random" else seed

    def build(self, input_shape: Sequence[int | None]) -> None:
        D = input_shape[-1]
        if D is None:
            raise ValueError(f"MADE needs a known input size; received shape {input_shape}.")
        D = int(D)
        self.input_dim = D
        degrees = made_degrees(D, self.hidden_units, self.ordering, self.seed)
        masks = made_masks(degrees, self.params_per_dim)
        sizes = [D, *self.hidden_units, self.params_per_dim * D]
        self.kernels, self.biases, self.masks = [], [], []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            last = i == len(sizes) - 2
            seed = None if self.seed is None else self.seed + i
            init = "zeros" if last else keras.initializers.GlorotUniform(seed=seed)
            self.kernels.append(
                self.add_weight(shape=(n_in, n_out), initializer=init, name=f"kernel_{i}")
            )
            self.biases.append(
                self.add_weight(shape=(n_out,), initializer="zeros", name=f"bias_{i}")
            )
            mask = self.add_weight(
                shape=(n_in, n_out), initializer="zeros", trainable=False, name=f"mask_{i}"
            )
            mask.assign(masks[i].astype(mask.dtype))
            self.masks.append(mask)
        self.context_kernel = None
        if self.context_dim is not None:
            seed = None if self.seed is None else self.seed + len(sizes)
            self.context_kernel = self.add_weight(
                shape=(self.context_dim, self.hidden_units[0]),
                initializer=keras.initializers.GlorotUniform(seed=seed),
                name="context_kernel",
            )

    def call(self, x: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        return self.call_with(self.masked_weights(), x, context)

    def masked_weights(self) -> MadeWeights:
        """The weights as the passes use them: each kernel times its mask (W * M, formed once
        per call), the biases, and the context kernel (None without a context)."""
        masked = [k * m for k, m in zip(self.kernels, self.masks)]
        return MadeWeights(masked, list(self.biases), self.context_kernel)

    def call_with(
        self, weights: MadeWeights, x: tf.Tensor, context: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The MADE pass on ``weights`` (``masked_weights()``, or the same frozen as constants
        by an export): outputs [..., params_per_dim, D]."""
        if (context is None) != (weights.context_kernel is None):
            raise ValueError(
                f"MADE built with context_dim={self.context_dim} was called "
                f"{'without' if context is None else 'with'} a context."
            )
        h = x
        n = len(weights.kernels)
        for i in range(n):
            h = matmul(h, weights.kernels[i]) + weights.biases[i]
            if i == 0 and context is not None:
                h = h + matmul(context, weights.context_kernel)
            if i < n - 1:
                h = self.activation_fn(h)
        if x.shape.rank == 2:  # the folded passes of the layers: no shape arithmetic
            return tf.reshape(h, [-1, self.params_per_dim, self.input_dim])
        batch = tf.shape(x)[:-1]
        return tf.reshape(h, tf.concat([batch, [self.params_per_dim, self.input_dim]], 0))

    def solve_plan(self, weights: MadeWeights | None = None) -> MadeWeights:
        """``weights`` (default ``masked_weights()``) in the layout ``solve`` steps through:
        inputs and outputs in the order of their degrees, each hidden layer's units sorted by
        degree and every degree's block padded with zero units to the widest."""
        weights = weights or self.masked_weights()
        D, P = self.input_dim, self.params_per_dim
        degrees = made_degrees(D, self.hidden_units, self.ordering, self.seed)
        by_degree = np.argsort(degrees[0], kind="stable")
        units = [_degree_layout(d, D)[0] for d in degrees[1:]]
        outputs = (by_degree[:, None] + D * np.arange(P)[None, :]).reshape(-1)
        rows, cols = [by_degree, *units], [*units, outputs]
        kernels = [
            _take(_take(k, rows[i], axis=0), cols[i], axis=1) for i, k in enumerate(weights.kernels)
        ]
        biases = [_take(b[None, :], cols[i], axis=1)[0] for i, b in enumerate(weights.biases)]
        context_kernel = weights.context_kernel
        if context_kernel is not None:
            context_kernel = _take(context_kernel, cols[0], axis=1)
        return MadeWeights(kernels, biases, context_kernel)

    def solve(
        self,
        target: tf.Tensor,
        law: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
        context: tf.Tensor | None = None,
        unroll: bool = False,
        plan: MadeWeights | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Solves u = law(target; MADE(u)) for u [N, D]: the sequential direction of an
        autoregressive flow (MAF's sampling, IAF's density). ``law(t_i, h_i)`` maps one
        coordinate, t_i [N, 1] with its MADE outputs h_i [N, P, 1], to (u_i [N, 1], log-det
        [N]); the log-dets are summed.

        Output i of MADE depends only on hidden units of degree < d_i, and a hidden unit of
        degree d only on the inputs of degree <= d. So once the coordinates of degree
        1..t-1 are known, the units of degree t-1 are final and output t can be computed.
        Step t (t = 1..D) therefore computes, in every hidden layer l, only the units of
        degree t-1 and pushes them on to the next layer's pre-activations, then reads output
        t and applies the law; the new coordinate enters the first layer as a rank-one
        update:

            a_1 += u_t W_1[t, :]                        (inputs to layer 1, masked W * M)
            h_l[deg t-1] = act(a_l[deg t-1]),  a_l+1 += h_l[deg t-1] W_l+1[deg t-1, :]

        Every unit is computed once, so the D steps cost about one MADE pass in all, against
        the D passes of the fixed-point sweeps u <- law(target; MADE(u)) (TFP's way), and the
        result is the same up to the order of floating-point sums. Units are sorted by degree
        once per call (gathering the masked kernels), and each degree's block is padded to
        the widest, so every step has the same static shapes: under XLA the D steps are one
        while loop. ``unroll`` writes the D steps out instead (static slices, no loop: the
        export graphs). ``plan`` is ``solve_plan()``'s result, frozen where the caller has it
        (exports); by default it is formed from the weights.
        """
        D, P, L = self.input_dim, self.params_per_dim, len(self.hidden_units)
        dtype = target.dtype
        degrees = made_degrees(D, self.hidden_units, self.ordering, self.seed)
        by_degree = np.argsort(degrees[0], kind="stable")  # step s reads input by_degree[s]
        widths = [_degree_layout(d, D)[1] for d in degrees[1:]]
        K, biases, context_kernel = plan or self.solve_plan()
        # the kernels out of hidden layer l, one block of rows per degree: [D, width, cols]
        # (a frozen plan, numpy arrays, is cut up here: the graph holds one constant a step)
        if not (unroll and isinstance(K[0], np.ndarray)):
            K = [tf.convert_to_tensor(k) for k in K]
        reshape = tf.reshape if tf.is_tensor(K[0]) else np.reshape
        blocks = [reshape(K[i + 1], [D, width, -1]) for i, width in enumerate(widths)]
        natural = np.array_equal(by_degree, np.arange(D))
        target = target if natural else tf.gather(target, by_degree, axis=-1)
        zero = tf.zeros_like(target[:, :1])  # [N, 1]
        pre = [zero + b for b in biases]
        if context is not None:
            pre[0] += matmul(context, context_kernel)
        u0 = tf.zeros_like(target)
        ldj0 = zero[:, 0]
        one_hot = np.eye(D, dtype=dtype.as_numpy_dtype)

        def step(s, u, pre, ldj):
            pre = list(pre)
            for i, width in enumerate(widths):  # the units of degree s are final
                h = self.activation_fn(tf.slice(pre[i], tf.stack([0, s * width]), [-1, width]))
                pre[i + 1] += tf.matmul(h, blocks[i][s])
            params = tf.slice(pre[L], tf.stack([0, s * P]), [-1, P])
            u_s, ldj_s = law(tf.slice(target, tf.stack([0, s]), [-1, 1]), params[:, :, None])
            pre[0] += u_s * K[0][s][None, :]
            u += u_s * (one_hot[s] if unroll else tf.one_hot(s, D, dtype=dtype))[None, :]
            return u, pre, ldj + ldj_s

        if unroll:
            u, pre, ldj = u0, pre, ldj0
            for s in range(D):
                u, pre, ldj = step(s, u, pre, ldj)
        else:

            def body(s, u, pre, ldj):
                return (s + 1, *step(s, u, pre, ldj))

            _, u, _, ldj = tf.while_loop(
                lambda s, *_: s < D, body, (tf.constant(0), u0, pre, ldj0), maximum_iterations=D
            )
        return (u if natural else tf.gather(u, np.argsort(by_degree), axis=-1)), ldj

    @property
    def input_degrees(self) -> np.ndarray:
        return made_degrees(self.input_dim, self.hidden_units, self.ordering, self.seed)[0]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "params_per_dim": self.params_per_dim,
            "hidden_units": self.hidden_units,
            "ordering": self.ordering,
            "activation": self.activation,
            "seed": self.seed,
            "context_dim": self.context_dim,
        }


@keras.saving.register_keras_serializable(package="nfzoo")
class ConvNet(_Stack):
    """Convolutional conditioner on images [batch, H, W, C_in] -> [batch, H, W, C_out]:
    3x3 conv (``hidden_channels``) -> 1x1 conv (``hidden_channels``) -> 3x3 conv (``C_out``,
    zero-initialised), "same" padding, as Glow's coupling network. With
    ``hidden_channels=None`` it is the zero-initialised 3x3 conv alone (Glow's learned prior of
    the multi-scale split).

    Args:
      output_channels: C_out.
      hidden_channels: width of the two hidden convolutions, or None for none.
      activation: activation of the hidden layers (a Keras activation name).
    """

    def __init__(
        self,
        output_channels: int,
        hidden_channels: int | None = 64,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_channels = int(output_channels)
        self.hidden_channels = None if hidden_channels is None else int(hidden_channels)
        self.activation = activation
        self.hidden = []
        if self.hidden_channels is not None:
            self.hidden = [
                keras.layers.Conv2D(
                    self.hidden_channels,
                    size,
                    padding="same",
                    activation=activation,
                    dtype=self.dtype_policy,
                    name=f"conv_{i}",
                )
                for i, size in enumerate((3, 1))
            ]
        self.out = keras.layers.Conv2D(
            self.output_channels,
            3,
            padding="same",
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv_out",
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "output_channels": self.output_channels,
            "hidden_channels": self.hidden_channels,
            "activation": self.activation,
        }
