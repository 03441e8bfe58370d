"""The one place for private TensorFlow, Keras and TensorFlow Probability API.

Each use of a private module, attribute or hook sits behind a named function (or one small
class) whose docstring says which public behaviour it stands in for, and each has a test of
the same name in tests/test_compat.py that checks the behaviour the library relies on, so
that an upgrade which moves one of them breaks this file and one test. Private modules are
imported inside the function that needs them: importing this module touches none of them,
and a missing one fails only its own function (those with a safe fallback say so).

Functions here that use public API only stand in for a private one that Keras or TensorFlow
apply internally, so that nfzoo follows the same rule as the library it extends.

TFP's protected subclass hooks (``_forward``, ``_inverse``, ``_batch_shape``, ...) are not
here: overriding them is TFP's documented way to write a bijector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

__all__ = [
    "NoBijectorCache",
    "all_replicas",
    "apply_if",
    "dense_is_plain",
    "expose_module_variables",
    "freeze_variables",
    "in_multi_worker_mode",
    "in_xla_context",
    "init_bijector",
    "keras_operation_call",
    "module_name",
    "optimization_barrier",
    "scale_loss_for_distribution",
    "set_module_name",
    "without_bijector_cache",
]


# ---- XLA ------------------------------------------------------------------------------


def in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA (``tf.function(jit_compile=True)``,
    Keras's ``jit_compile=True``, or a function called from one). False when eager, and
    False where TensorFlow lacks the test (then every product is a plain one).

    TensorFlow has no public way to ask; its own test is the private
    ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``."""
    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return False
    return bool(GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def optimization_barrier(tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """``tensors`` unchanged, behind XLA's OptimizationBarrier: XLA may not fuse or reorder
    work across it (a transpose is not folded into the dot that produced it).

    The op is not in ``tf.raw_ops``; it is the private
    ``tensorflow.compiler.tf2xla.ops.gen_xla_ops.xla_optimization_barrier``. Where it is
    missing the tensors come back as they are: the values are the same, only XLA is free to
    fold the layout back."""
    try:
        from tensorflow.compiler.tf2xla.ops.gen_xla_ops import xla_optimization_barrier
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return list(tensors)
    return list(xla_optimization_barrier(list(tensors)))


# ---- freezing graphs for export -------------------------------------------------------


def freeze_variables(concrete_fn, lower_control_flow: bool = False):
    """``concrete_fn`` with every variable it reads replaced by a constant of its current
    value: a ConcreteFunction whose graph holds no variable op, with the same inputs and
    outputs. ``lower_control_flow=False`` keeps functional While / If ops as they are.

    TensorFlow 2 has no public freezing (``tf.compat.v1.graph_util`` works on v1 sessions);
    this is the private
    ``tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2``
    that TensorFlow's own TFLite converter uses."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    return convert_variables_to_constants_v2(concrete_fn, lower_control_flow=lower_control_flow)


# ---- distribution strategies ----------------------------------------------------------


def in_multi_worker_mode(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` syncs replicas in more than this one worker process (a
    MultiWorkerMirroredStrategy over a cluster of two or more workers). Public API only.

    Stands in for the private ``strategy.extended._in_multi_worker_mode()``, which Keras asks
    before its multi-worker reduction of logs: for the strategies whose replicas all run in
    sync (Mirrored, MultiWorkerMirrored, TPU), the replicas in sync are this worker's
    devices times the number of workers, so more replicas than local devices means more
    than one worker."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:  # the default strategy has no worker_devices to ask
        return False
    return replicas > len(strategy.extended.worker_devices)


def scale_loss_for_distribution(loss: tf.Tensor) -> tf.Tensor:
    """``loss`` divided by the number of replicas in sync (unchanged outside a strategy), so
    that the sum of the replicas' gradients is the gradient of the global mean. Public API
    only.

    The same scaling as Keras's private ``keras.src.losses.loss.scale_loss_for_distribution``,
    which Keras's own ``train_step`` applies through its losses; ``Flow.train_step`` computes
    its loss itself and scales it here."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(1.0 / replicas, loss.dtype)
    return loss


def all_replicas(flag: tf.Tensor) -> tf.Tensor:
    """``flag`` AND-ed over the replicas in sync (itself outside a distribution strategy), so
    that every replica takes the same branch of ``apply_if``. Public API only."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    failed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
    return failed < 0.5  # no replica failed


def apply_if(pred: tf.Tensor, fn: Callable[..., object], args: Sequence) -> None:
    """Runs ``fn(*args)`` when ``pred`` holds, from a replica context, where ``fn`` may call
    ``merge_call`` (a Keras optimizer's ``apply_gradients`` does under MirroredStrategy).

    TensorFlow refuses a ``tf.cond`` in a replica context whose branch calls ``merge_call``;
    Keras's own LossScaleOptimizer therefore moves the cond to the cross-replica context and
    runs the branch on each replica with its own ``args``, which is done here. Whether a
    strategy needs that is told by the private
    ``tf.__internal__.distribute.strategy_supports_no_merge_call`` (as Keras asks it); ``pred``
    must agree across replicas (``all_replicas``)."""
    if tf.__internal__.distribute.strategy_supports_no_merge_call():

        def run_here():
            fn(*args)
            return tf.constant(True)

        tf.cond(pred, run_here, lambda: tf.constant(False))
        return

    def cross_replica(distribution, pred, args):
        first = distribution.experimental_local_results(pred)[0]

        def run():
            distribution.extended.call_for_each_replica(fn, args=tuple(args))
            return tf.constant(True)

        tf.cond(first, run, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(pred, list(args)))


# ---- one object that is a Keras layer and a TFP bijector ------------------------------


class NoBijectorCache:
    """Stands in for TFP's bijector cache and remembers nothing: every ``forward`` /
    ``inverse`` of a bijector class given it (``without_bijector_cache``) computes.

    TFP offers no public switch for its cache; a Bijector reaches it through the private
    class attribute ``_cache`` (a descriptor: ``cache_util.BijectorCache``) and calls its
    ``forward``, ``inverse``, ``forward_attributes`` and ``inverse_attributes``, which this
    class answers. Layers need it off: the cache keys on input tensors, so after a weight
    update it would return stale results, and those carry no gradient to the weights."""

    def __init__(self, bijector=None):
        self._bijector = bijector

    def __get__(self, bijector, bijector_class=None):
        return NoBijectorCache(bijector)

    def forward(self, x, **kwargs):
        return self._bijector._forward(x, **kwargs)

    def inverse(self, y, **kwargs):
        return self._bijector._inverse(y, **kwargs)

    def forward_attributes(self, x, **kwargs):
        return {}

    def inverse_attributes(self, y, **kwargs):
        return {}


def without_bijector_cache(cls: Any) -> Any:
    """Class decorator: the bijector class ``cls`` (and its subclasses) keeps no cache, its
    TFP ``_cache`` being a ``NoBijectorCache``."""
    cls._cache = NoBijectorCache()
    return cls


def module_name(obj) -> str:
    """The name that ``tf.Module.name`` and TFP's ``Bijector.name`` report for ``obj``: both
    read-only properties return the private attribute ``_name``."""
    return obj._name


def set_module_name(obj, name: str) -> None:
    """Makes ``tf.Module.name`` and TFP's ``Bijector.name`` report ``name`` for ``obj``.
    Neither has a public setter; both read the private attribute ``_name``, set here."""
    obj._name = name


def init_bijector(
    obj,
    *,
    forward_min_event_ndims: int,
    is_constant_jacobian: bool,
    name: str,
) -> None:
    """Runs TFP's ``Bijector.__init__`` on ``obj``, an object that is already a Keras layer
    (a second base class initialised after the first), keeping ``name`` as its name.

    Two things are settled here. ``parameters={}``: TFP compares, hashes, copies and infers
    batch shapes from a bijector's constructor parameters; a layer's parameters are its
    Keras config and weights, so TFP is told there are none (a dict, as TFP's code that
    iterates it expects). And the name: TFP rewrites it from the enclosing name scope, so
    Keras's name is stored back where tf.Module and TFP read it (``set_module_name``)."""
    import tensorflow_probability as tfp

    tfp.bijectors.Bijector.__init__(
        obj,
        forward_min_event_ndims=forward_min_event_ndims,
        is_constant_jacobian=is_constant_jacobian,
        validate_args=False,
        dtype=None,
        parameters={},
        name=name,
    )
    set_module_name(obj, name)


def expose_module_variables(module: tf.Module, variables: Sequence) -> None:
    """Lets tf.Module's attribute walk (``module.variables``, ``trainable_variables``, and so
    TFP's ``TransformedDistribution.trainable_variables`` and ``tfp.vi``) find the Keras
    ``variables`` of ``module``, as the ``tf.Variable`` objects that store them.

    A Keras 3 variable is not a ``tf.Variable``, so tf.Module's walk, which collects
    ``tf.Variable`` attributes, does not see it; the TensorFlow backend keeps its storage in
    ``variable.value`` (a ``tf.Variable`` outside autocast scopes). The list is stored in
    the attribute ``_tf_module_variables``, which the walk visits like any other."""
    module._tf_module_variables = [v.value for v in variables]


def keras_operation_call(layer, *args, **kwargs):
    """``keras.Operation.__call__(layer, ...)``: the step Keras's ``Layer.__call__`` ends with
    (``super().__call__``) where the next class in the MRO is not Keras's Operation (a class
    that is also a TFP Bijector). It runs ``layer.call`` eagerly, or builds a functional
    graph node on symbolic inputs."""
    import keras

    return keras.Operation.__call__(layer, *args, **kwargs)


def dense_is_plain(layer) -> bool:
    """Whether the Keras Dense ``layer`` computes ``activation(inputs @ kernel + bias)`` with
    its own ``kernel`` weight, so that another implementation of the product may replace
    Keras's ``call``: False for a quantised layer (``layer.quantize(...)``, or a quantised
    dtype policy) and for one with LoRA enabled (``layer.enable_lora(rank)``).

    Reads ``layer.quantization_mode`` and ``layer.lora_enabled``, attributes of Keras's
    Dense that its own ``call`` and ``kernel`` dispatch on."""
    return layer.quantization_mode is None and not getattr(layer, "lora_enabled", False)
