"""Frozen endpoint graphs of a Flow: the one graph every export format is converted from.

Each endpoint is traced once as a TensorFlow function on a dynamic batch, then frozen
(variables become constants, ``_compat.freeze_variables``) into a GraphDef that holds
no variable and no captured eager tensor. SavedModel, ONNX and TFLite are all converted from
that GraphDef, so the three artifacts compute the same graph.

Weight-only work is frozen before tracing, not left to graph optimisers: a layer class can
register an *export kernel* (``register_export_kernel``) that precomputes its derived weights
in numpy, in float64, at export time. The kernels here replace

* LULinear / QRLinear: W = P L U or Q R and W^-1 become constants, so the inverse is one
  matmul instead of triangular solves on activations (``MatrixTriangularSolve`` converts to
  neither ONNX nor TFLite builtins), and LU reconstruction / Householder products disappear;
* the Sylvester layers: A = R~ Q^T and B = Q R become constants (for SylvesterOrthogonal this
  removes the orthogonalisation while_loop over weights);
* FactorOut: its deeper layers run through their own export kernels.

Every other layer is traced through its own passes (``BijectorLayer.folded_pass``, with the
context for conditional layers). Kernels are checked by the export's parity check like
everything else, so a kernel that drifts from its layer fails the export.

Conditional flows: every endpoint takes one more input, ``context`` [batch, C] (one row per
row of x or z; ``sample`` draws n samples for each row). Inputs are checked inside the graph,
so that every runtime refuses a wrong input rather than answering for part of it: each input
is reshaped to [its own rows, *event shape] (an input of another size fails that reshape in
TensorFlow, onnxruntime and LiteRT alike), the context to the rows of x or z, and ``n < 0``
fails a reshape before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import tensorflow as tf

from nfzoo import _compat
from nfzoo.bijector_layer import BijectorLayer
from nfzoo.constants import LOG_2PI
from nfzoo.flow import Flow
from nfzoo.layers import (
    FactorOut,
    InvertibleLinear,
    LULinear,
    QRLinear,
    SylvesterHouseholder,
    SylvesterOrthogonal,
    SylvesterTriangular,
)
from nfzoo.layers.autoregressive import Autoregressive
from nfzoo.nets import MadeWeights
from nfzoo.registry import Registry

__all__ = [
    "ENDPOINTS",
    "Endpoint",
    "ExportKernel",
    "FrozenEndpoint",
    "endpoint_functions",
    "flow_endpoints",
    "freeze_endpoints",
    "register_export_kernel",
]

#: a pass on folded inputs: (u [N, *event], context [N, C] or None) -> (u', log-det [N])
LayerPass = Callable[..., tuple[tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class ExportKernel:
    """Export-time replacement of a layer's passes, each ``pass(u, context=None)``;
    ``inverse`` is None without an inverse. Kernels of unconditional layers ignore the
    context."""

    forward: LayerPass
    inverse: LayerPass | None


_KERNELS: dict[type, Callable[[BijectorLayer], ExportKernel]] = {}

_Factory = TypeVar("_Factory", bound=Callable[..., ExportKernel])


def register_export_kernel(*classes: type) -> Callable[[_Factory], _Factory]:
    """Registers ``factory(layer) -> ExportKernel`` for ``classes`` (and their subclasses)."""

    def decorate(factory: _Factory) -> _Factory:
        for cls in classes:
            _KERNELS[cls] = factory
        return factory

    return decorate


def export_kernel(layer: BijectorLayer) -> ExportKernel:
    """The layer's registered export kernel, or its own passes."""
    for cls in type(layer).__mro__:
        if cls in _KERNELS:
            return _KERNELS[cls](layer)

    def forward(u, context=None):
        return layer.folded_pass(u, context, inverse=False)

    def inverse(u, context=None):
        return layer.folded_pass(u, context, inverse=True)

    return ExportKernel(forward, inverse if layer.has_inverse else None)


def _const(value: np.ndarray, layer: BijectorLayer) -> tf.Tensor:
    return tf.constant(np.asarray(value, dtype=layer.dtype.as_numpy_dtype))


def _fill(value: float, like: tf.Tensor, event_ndims: int = 1) -> tf.Tensor:
    return tf.fill(tf.shape(like)[:-event_ndims], tf.constant(value, like.dtype))


@register_export_kernel(InvertibleLinear, LULinear, QRLinear)
def _linear_kernel(layer) -> ExportKernel:
    """x = W z + b with W and W^-1 frozen (computed in float64); the log-det, a constant, is
    frozen too (log|det W| times the positions sharing W)."""
    w = layer.weight_matrix().numpy().astype(np.float64)
    w_inv = np.linalg.inv(w)
    bias = layer.bias.numpy().astype(np.float64)
    log_det = float(layer._positions * np.linalg.slogdet(w)[1])
    W, W_inv, b = _const(w, layer), _const(w_inv, layer), _const(bias, layer)
    k = layer.event_ndims

    def forward(z, context=None):
        return tf.linalg.matvec(W, z) + b, _fill(log_det, z, k)

    def inverse(x, context=None):
        return tf.linalg.matvec(W_inv, x - b), _fill(-log_det, x, k)

    return ExportKernel(forward, inverse)


@register_export_kernel(SylvesterOrthogonal, SylvesterHouseholder, SylvesterTriangular)
def _sylvester_kernel(layer) -> ExportKernel:
    """x = z + B tanh(A z + b), A = R~ Q^T and B = Q R frozen;
    log|det| = sum_i log(1 + tanh'(a_i) R~_ii R_ii)."""
    q = layer.q_matrix().numpy().astype(np.float64)
    r1, d1 = (t.numpy().astype(np.float64) for t in layer._triangular(layer.r1))
    r2, d2 = (t.numpy().astype(np.float64) for t in layer._triangular(layer.r2))
    A, B = _const(r2 @ q.T, layer), _const(q @ r1, layer)
    b, diag = _const(layer.b.numpy(), layer), _const(d1 * d2, layer)

    def forward(z, context=None):
        h = tf.tanh(tf.linalg.matvec(A, z) + b)
        x = z + tf.linalg.matvec(B, h)
        return x, tf.reduce_sum(tf.math.log1p((1.0 - h**2) * diag), axis=-1)

    return ExportKernel(forward, None)


#: autoregressive layers on at most this many dimensions export their sequential direction
#: as D steps written out (no loop); wider ones as one loop over the steps
UNROLL_LIMIT = 64


@register_export_kernel(Autoregressive)
def _autoregressive_kernel(layer) -> ExportKernel:
    """MAF, IAF and the spline autoregressive layer with W * M frozen as constants: the
    parallel direction is one MADE pass on them, the sequential one ``MADE.solve``'s D steps
    on the kernels sorted by degree (also frozen), each step computing only the units and the
    output columns it needs; written out step by step up to ``UNROLL_LIMIT`` dimensions."""
    made = layer.made

    def frozen(weights: MadeWeights) -> MadeWeights:  # numpy: constants in the traced graph
        def const(t):
            return None if t is None else t.numpy().astype(layer.dtype.as_numpy_dtype)

        return MadeWeights(
            [const(k) for k in weights.kernels],
            [const(b) for b in weights.biases],
            const(weights.context_kernel),
        )

    masked = made.masked_weights()
    weights, plan = frozen(masked), frozen(made.solve_plan(masked))
    unroll = layer.event_dim <= UNROLL_LIMIT

    def forward(z, context=None):
        return layer.autoregressive_pass(z, context, False, weights, plan, unroll)

    def inverse(x, context=None):
        return layer.autoregressive_pass(x, context, True, weights, plan, unroll)

    return ExportKernel(forward, inverse)


def _chain_pass(passes, reverse: bool):
    """One pass through kernels' passes (in reverse order for the inverse), summing log-dets."""

    def run(u, context=None):
        total = 0.0
        for p in reversed(passes) if reverse else passes:
            u, ldj = p(u, context)
            total = total + ldj
        return u, total

    return run


@register_export_kernel(FactorOut)
def _factor_out_kernel(layer) -> ExportKernel:
    """The multi-scale split with its deeper layers' kernels in place of their passes."""
    kernels = [export_kernel(inner) for inner in layer.inner_layers]
    inner_forward = _chain_pass([k.forward for k in kernels], reverse=False)

    def forward(z, context=None):
        return layer.forward_with(inner_forward, z)

    if any(k.inverse is None for k in kernels):
        return ExportKernel(forward, None)
    inner_inverse = _chain_pass([k.inverse for k in kernels], reverse=True)

    def inverse(x, context=None):
        return layer.inverse_with(inner_inverse, x)

    return ExportKernel(forward, inverse)


# ---- endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One exported function: named inputs and outputs, and what it computes."""

    name: str
    doc: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    needs_inverse: bool = False
    random: bool = False


ENDPOINTS: Registry[Endpoint] = Registry("export endpoint")
for _endpoint in (
    Endpoint(
        "log_prob",
        "log q(x) for data x of shape [batch, *event_shape]: the inverse pass x -> z, "
        "log p(z) + sum log|det dz/dx|. Output log_prob of shape [batch].",
        ("x",),
        ("log_prob",),
        needs_inverse=True,
    ),
    Endpoint(
        "encode",
        "z = f(x), the normalizing direction, for x of shape [batch, *event_shape]. Output z.",
        ("x",),
        ("z",),
        needs_inverse=True,
    ),
    Endpoint(
        "generate",
        "x = g(z), the generative direction, for base noise z ~ N(0, I) of shape "
        "[batch, *base_shape]; deterministic. Output x.",
        ("z",),
        ("x",),
    ),
    Endpoint(
        "generate_and_log_prob",
        "(x, log q(x)) with x = g(z), in one forward pass: log p(z) - sum log|det dx/dz|. "
        "Works without an inverse. Outputs x [batch, *event_shape] and log_prob [batch].",
        ("z",),
        ("x", "log_prob"),
    ),
    Endpoint(
        "sample",
        "n samples x = g(z), z drawn in the graph by RandomStandardNormal (unseeded: "
        "different on every call). Input n: int32 scalar. Output x of shape "
        "[n, *event_shape].",
        ("n",),
        ("x",),
        random=True,
    ),
):
    ENDPOINTS.add(_endpoint.name, _endpoint)


def flow_endpoints(flow: Flow) -> dict[str, Endpoint]:
    """The endpoints ``flow`` supports, with the input ``context`` for a conditional flow."""
    has_inverse = all(export_kernel(layer).inverse is not None for layer in flow.flow_layers)
    out = {}
    for name, e in ENDPOINTS.items():
        if e.needs_inverse and not has_inverse:
            continue
        if flow.context_dim is not None:
            e = replace(
                e,
                inputs=(*e.inputs, "context"),
                doc=e.doc + CONTEXT_DOC[e.random].format(C=flow.context_dim),
            )
        out[name] = e
    return out


CONTEXT_DOC = {
    False: " Input context [batch, {C}]: the condition c of each row (q(x | c)).",
    True: " Input context [batch, {C}]: n samples are drawn for each row, x of shape "
    "[n, batch, *event_shape].",
}


def rows(t: tf.Tensor, event_shape) -> tf.Tensor:
    """``t`` reshaped to [its own first dimension, *event_shape]: the identity on a right
    input; an input of another size (a wrong feature count, a missing batch axis) fails this
    reshape in every runtime. The target shape is computed from the input at run time, so no
    converter can fold the check away."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:1], list(event_shape)], 0))


def rows_like(t: tf.Tensor, like: tf.Tensor, width: int) -> tf.Tensor:
    """``t`` [b, width] reshaped to [rows of ``like``, width]: fails unless b matches."""
    return tf.reshape(rows(t, [width]), tf.concat([tf.shape(like)[:1], [width]], 0))


def non_negative(n: tf.Tensor) -> tf.Tensor:
    """``n``, multiplied by [1, 0][2 * (n < 0)]: an out-of-range gather, an error in every
    runtime, when n < 0, before a negative count reaches the random op (where LiteRT
    crashes). A gather from distinct constants at a run-time index cannot be folded away (a
    reshape of ones could, and the TFLite converter did)."""
    index = tf.reshape(2 * tf.cast(n < 0, tf.int32), [1])
    return n * tf.reduce_sum(tf.gather(tf.constant([1, 0], tf.int32), index))


def endpoint_functions(flow: Flow) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
    """Python functions (dict outputs) and input specs of the endpoints ``flow`` supports."""
    kernels = [export_kernel(layer) for layer in flow.flow_layers]
    endpoints = flow_endpoints(flow)
    dtype = tf.as_dtype(flow.compute_dtype)
    data_shape, base_shape = list(flow.data_event_shape), list(flow.base_event_shape)
    context_dim = flow.context_dim or 0  # 0: unconditional, whose endpoints take no context
    base_axes = list(range(-len(base_shape), 0))
    base_size = int(np.prod(base_shape))

    def base_log_prob(z):  # standard normal, written out: no TFP op left in the graph
        return -0.5 * tf.reduce_sum(z**2, axis=base_axes) - 0.5 * base_size * LOG_2PI

    def checked(u, shape, context):
        u = rows(u, shape)
        if context is None:
            return u, None
        return u, flow.standardized_context(rows_like(context, u, context_dim))

    def forward(z, context=None):
        z, context = checked(z, base_shape, context)
        x, total = _chain_pass([k.forward for k in kernels], reverse=False)(z, context)
        return z, x, total + tf.zeros(tf.shape(z)[:1], z.dtype)

    def inverse(x, context=None):
        x, context = checked(x, data_shape, context)
        z, total = _chain_pass([k.inverse for k in kernels], reverse=True)(x, context)
        return z, total + tf.zeros(tf.shape(x)[:1], x.dtype)

    def log_prob(x, context=None):
        z, ildj = inverse(x, context)
        return {"log_prob": base_log_prob(z) + ildj}

    def encode(x, context=None):
        return {"z": inverse(x, context)[0]}

    def generate(z, context=None):
        return {"x": forward(z, context)[1]}

    def generate_and_log_prob(z, context=None):
        z, x, fldj = forward(z, context)
        return {"x": x, "log_prob": base_log_prob(z) - fldj}

    def sample(n, context=None):
        n = non_negative(n)
        if context is None:
            z = tf.random.normal(tf.concat([[n], base_shape], axis=0), dtype=dtype)
            return {"x": forward(z)[1]}
        context = flow.standardized_context(rows(context, [context_dim]))
        batch = tf.shape(context)[:1]
        z = tf.random.normal(tf.concat([[n], batch, base_shape], axis=0), dtype=dtype)
        z = tf.reshape(z, [-1, *base_shape])  # row i * batch + j: draw i for context j
        tiled = tf.reshape(tf.tile(context[None], tf.stack([n, 1, 1])), [-1, context_dim])
        x = _chain_pass([k.forward for k in kernels], reverse=False)(z, tiled)[0]
        return {"x": tf.reshape(x, tf.concat([[n], batch, data_shape], axis=0))}

    specs = {
        "x": tf.TensorSpec([None, *data_shape], dtype, name="x"),
        "z": tf.TensorSpec([None, *base_shape], dtype, name="z"),
        "n": tf.TensorSpec([], tf.int32, name="n"),
        "context": tf.TensorSpec([None, context_dim], dtype, name="context"),
    }
    fns = {
        "log_prob": log_prob,
        "encode": encode,
        "generate": generate,
        "generate_and_log_prob": generate_and_log_prob,
        "sample": sample,
    }
    return {name: (fns[name], [specs[k] for k in e.inputs]) for name, e in endpoints.items()}


@dataclass
class FrozenEndpoint:
    """A frozen endpoint: GraphDef, and graph tensor names of its inputs and outputs."""

    endpoint: Endpoint
    graph_def: tf.compat.v1.GraphDef
    input_tensors: dict[str, str]  # endpoint input name -> "placeholder:0"
    output_tensors: dict[str, str]  # endpoint output name -> "Identity_k:0"
    input_specs: list[tf.TensorSpec] = field(default_factory=list)

    def as_function(self, relaxed: bool = False) -> tf.types.experimental.ConcreteFunction:
        """A ConcreteFunction that imports the frozen graph (constants only, no variables),
        taking the endpoint inputs by name and returning a dict of its outputs.

        ``relaxed``: the inputs are declared of any shape. TensorFlow trusts a declared
        shape: its graph optimiser would remove the in-graph input checks (``rows``) as
        no-ops, and a SavedModel signature does not itself refuse a tensor of another shape.
        Declared loosely, the checks run and refuse wrong inputs."""
        names = list(self.output_tensors)
        specs = self.input_specs
        if relaxed:
            specs = [tf.TensorSpec(None, s.dtype, name=s.name) for s in specs]

        @tf.function(input_signature=specs)
        def fn(*args):
            outs = tf.graph_util.import_graph_def(
                self.graph_def,
                input_map={self.input_tensors[s.name]: a for s, a in zip(self.input_specs, args)},
                return_elements=[self.output_tensors[k] for k in names],
                name="frozen",
            )
            return {k: tf.identity(t, name=k) for k, t in zip(names, outs)}

        return fn.get_concrete_function()


def freeze_endpoints(
    flow: Flow, endpoints: Collection[str] | None = None
) -> dict[str, FrozenEndpoint]:
    """Traces and freezes the endpoints of ``flow`` (all it supports, or those named)."""
    fns = endpoint_functions(flow)
    described = flow_endpoints(flow)
    frozen = {}
    for name, (fn, specs) in fns.items():
        if endpoints is not None and name not in endpoints:
            continue
        concrete = tf.function(fn).get_concrete_function(*specs)
        # Functional While stays functional (TFLite lowers it to WHILE, tf2onnx to Loop).
        const_fn = _compat.freeze_variables(concrete, lower_control_flow=False)
        graph_def = const_fn.graph.as_graph_def()
        _check_frozen(name, graph_def)
        keys = sorted(concrete.structured_outputs)  # outputs of a dict come in sorted key order
        frozen[name] = FrozenEndpoint(
            endpoint=described[name],
            graph_def=graph_def,
            input_tensors={s.name: t.name for s, t in zip(specs, const_fn.inputs)},
            output_tensors={k: t.name for k, t in zip(keys, const_fn.outputs)},
            input_specs=specs,
        )
    return frozen


#: ops that mean something was not frozen, or cannot run outside TensorFlow
_FORBIDDEN_OPS = {
    "VarHandleOp": "a variable was not frozen",
    "ReadVariableOp": "a variable was not frozen",
    "StatelessRandomNormalV2": "stateless random ops run in neither onnxruntime nor LiteRT",
    "MatrixTriangularSolve": "triangular solves convert to neither ONNX nor TFLite builtins",
    "BroadcastArgs": "tf2onnx 1.17 has no converter for BroadcastArgs",
}


def _check_frozen(name: str, graph_def) -> None:
    ops = {n.op for n in graph_def.node}
    ops |= {n.op for f in graph_def.library.function for n in f.node_def}
    bad = sorted(ops & set(_FORBIDDEN_OPS))
    if bad:
        reasons = "; ".join(f"{op}: {_FORBIDDEN_OPS[op]}" for op in bad)
        raise ValueError(
            f"Export of endpoint {name!r}: the frozen graph contains {', '.join(bad)} ({reasons})."
            " Register an export kernel for the layer that emits it "
            "(nfzoo.exporting.graphs.register_export_kernel)."
        )
