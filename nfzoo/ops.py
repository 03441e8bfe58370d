"""Small numerical helpers shared by the flow layers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nfzoo import _compat


def soft_clamp(x: tf.Tensor, bound: float | None) -> tf.Tensor:
    """``bound * tanh(x / bound)``: identity near 0, smooth, and never beyond +-bound.

    Log-scales pass through this so that ``exp(log_scale)`` stays finite in float32 whatever
    the conditioner outputs. ``bound=None`` disables the clamp."""
    if bound is None:
        return x
    return bound * tf.tanh(x / bound)


def sum_event(x: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Sums the trailing ``event_ndims`` axes of ``x`` (per-dimension log-dets to one value
    per batch element)."""
    if event_ndims == 0:
        return x
    return tf.reduce_sum(x, axis=list(range(-event_ndims, 0)))


def batch_constant(value: tf.Tensor, like: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Broadcasts a scalar ``value`` to the batch shape of ``like`` (its shape without the
    trailing ``event_ndims`` axes): for layers whose log-det does not depend on the input."""
    batch_shape = tf.shape(like)[: tf.rank(like) - event_ndims]
    return tf.fill(batch_shape, tf.cast(value, like.dtype))


def per_image(fn, u: tf.Tensor) -> tf.Tensor:
    """Applies ``fn``, an op on image batches [N, H, W, C] (a convolution, space-to-depth), to
    ``u`` of shape [batch..., H, W, C] by folding the batch axes into one and back."""
    images = fn(tf.reshape(u, [-1, *u.shape[-3:]]))
    return tf.reshape(images, tf.concat([tf.shape(u)[:-3], tf.shape(images)[1:]], axis=0))


def householder_product(vectors: tf.Tensor) -> tf.Tensor:
    """Q = H_1 H_2 ... H_K for the rows v_k of ``vectors`` ([..., K, D]), H_k = I - 2 v v^T /
    |v|^2; leading axes are a batch of independent products (per-example Q in ``nfzoo.vae``).

    Q is orthogonal to rounding error whatever the v_k. Cost O(K D^2) per product."""
    dim = vectors.shape[-1]
    q = tf.eye(dim, dtype=vectors.dtype)
    for k in range(vectors.shape[-2]):
        v = vectors[..., k, :]
        # Q H_k = Q - 2 (Q v) v^T / |v|^2
        qv = tf.linalg.matvec(q, v)
        q = (
            q
            - 2.0
            * (qv[..., :, None] * v[..., None, :])
            / tf.reduce_sum(v**2, axis=-1)[..., None, None]
        )
    return q


#: seeds are integers in [0, SEED_LIMIT): what numpy's RandomState and TF's seeds all take
SEED_LIMIT = 2**31


def check_seed(seed, who: str) -> int:
    """``seed`` as an int in [0, 2**31); a ValueError names anything else (None, floats such
    as 1.5, which would silently mean 1, booleans, out-of-range ints)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"{who}: seed must be an integer in [0, 2**31); received {seed!r}.")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{who}: seed must be in [0, 2**31); received {seed}.")
    return int(seed)


def fixed_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one when it is None: layers fix their seed at construction
    so that their config alone reproduces their initial weights and orderings."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return int(seed)


#: ``matmul`` computes the kernel gradient as (dY^T X)^T when n_in >= SWAP_RATIO x n_out.
#: Measured under XLA on CPU (``tools/bench.py dot-orientation``, ratio of X^T dY's time to
#: (dY^T X)^T's, one thread / two): [256, 16] 2.9-3.3x / 2.0x; [256, 64] 1.4-1.6x / 1.0x;
#: [256, 128] 1.1-1.2x / 0.85-0.89x, so kernels only twice as tall keep X^T dY.
#: ``math.inf`` switches the other orientation off: the gradient is then the one XLA computes
#: for ``tf.matmul`` (the same products), for a benchmark comparing the two.
SWAP_RATIO = 4


def in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA (``tf.function(jit_compile=True)``,
    Keras's ``jit_compile=True``, or a function called from one). False when eager."""
    return _compat.in_xla_context()


def matmul(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``x @ kernel`` for a dense layer (x [batch, n_in], kernel [n_in, n_out]).

    The same product as ``tf.matmul``; only its gradient under XLA differs, and only in how it
    is computed. The kernel's gradient is a product over the batch, X^T dY [n_in, n_out].
    For a kernel with far more rows than columns (n_in >= ``SWAP_RATIO`` x n_out: a network's
    output layer) XLA's CPU dot runs it 2-3.7x slower than the transposed product (dY^T X)^T
    (``tools/bench.py dot-orientation``, batch 512, [256, 8] and [256, 16], one thread or
    two), so that is what is computed there. XLA folds a plain transpose back into the dot, so
    the transposed product is kept apart by an optimisation barrier. Outside XLA (eager,
    plain graphs, exported graphs) and for inputs of rank other than 2 this is ``tf.matmul``.
    The rule was measured on CPU; ``tools/gpu_check.sh`` measures it on a GPU."""
    if not in_xla_context():
        return tf.matmul(x, kernel)
    x, kernel = tf.convert_to_tensor(x), tf.convert_to_tensor(kernel)
    if x.shape.rank != 2 or kernel.shape.rank != 2:
        return tf.matmul(x, kernel)
    return _xla_dense_matmul(x, kernel)


@tf.custom_gradient
def _xla_dense_matmul(x, kernel):
    def grad(dy):
        dx = tf.matmul(dy, kernel, transpose_b=True)
        n_in, n_out = kernel.shape
        if n_in is not None and n_out is not None and n_in >= SWAP_RATIO * n_out:
            # the barrier keeps XLA from folding the transpose into the dot's layout
            (dk_t,) = _compat.optimization_barrier([tf.matmul(dy, x, transpose_a=True)])
            dk = tf.transpose(dk_t)
        else:
            dk = tf.matmul(x, dy, transpose_a=True)
        return dx, dk

    return tf.matmul(x, kernel), grad


#: a compiled pass over at least ``8 * ROW_BLOCK`` rows runs in blocks of ``ROW_BLOCK`` rows
#: (``in_row_blocks``); ``tools/bench.py density-throughput`` measures what that gives
ROW_BLOCK = 1024


def in_row_blocks(fn, u: tf.Tensor, context: tf.Tensor | None, rows: int | None = None):
    """``fn(u, context) -> (a, b)`` for a row-wise ``fn`` (row i of a and b depends on row i of
    u and of the context only, b may be None), computed ``rows`` rows at a time when ``u`` has
    a known number of rows N >= 8 ``rows`` and the graph is being traced.

    A whole batch's intermediates (the conditioners' activations, N x hidden units) leave
    the CPU's caches between operations; a block's stay in them, and each elementwise pass
    over them runs from cache. The blocks are one loop (``tf.map_fn`` over a function traced
    once); the last is completed with the batch's first rows, whose results are dropped.
    Eagerly, or for fewer rows, this is ``fn(u, context)``. ``rows``: ``ROW_BLOCK`` by
    default."""
    rows = rows or ROW_BLOCK
    n = u.shape[0]
    if tf.executing_eagerly() or n is None or n < 8 * rows:
        return fn(u, context)
    count = -(-n // rows)
    pad = count * rows - n

    def blocks(t):
        t = tf.concat([t, t[:pad]], axis=0) if pad else t
        return tf.reshape(t, [count, rows, *t.shape[1:]])

    inputs = (blocks(u),) if context is None else (blocks(u), blocks(context))
    one_block = [tf.TensorSpec(t.shape[1:], t.dtype) for t in inputs]

    @tf.function(autograph=False)
    def block(*args):
        a, b = fn(args[0], args[1] if len(args) > 1 else None)
        return (a,) if b is None else (a, b)

    traced = block.get_concrete_function(*one_block)
    specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in traced.structured_outputs)
    outputs = tf.map_fn(lambda args: traced(*args), inputs, fn_output_signature=specs)
    outputs = [tf.reshape(t, [count * rows, *t.shape[2:]])[:n] for t in outputs]
    return outputs[0], (outputs[1] if len(outputs) > 1 else None)


def standard_normal(shape, dtype, seed: tuple[int, int] | None = None) -> tf.Tensor:
    """N(0, 1) draws of ``shape`` by TensorFlow's stateless Philox normal; ``seed`` (a pair
    of ints) gives the same draws on every call, None fresh ones (the seed of the draw then
    comes from the stateful generator, so ``tf.random.set_seed`` still repeats a run).

    The algorithm is named because XLA compiles the default ("auto_select") stateless
    normal, and the stateful one, far slower on CPU than Philox (``tools/bench.py
    density-throughput`` times sampling). Eagerly and in plain graphs "auto_select" is
    Philox: seeded draws there are the ones TFP's distributions give for that seed. Compiled
    by XLA they are other numbers, as they already are for TFP."""
    if seed is None:
        seed = tf.random.uniform([2], 0, SEED_LIMIT, dtype=tf.int64)
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")
