"""``nfzoo._compat``: one test per private hook, named after it, checking the behaviour the
library relies on, so that an upgrade of TensorFlow, Keras or TFP that moves a hook fails
here by name. Two-replica cases run in fresh processes (devices and TF_CONFIG are fixed at
TensorFlow start-up)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from processes import run_local_workers, subprocess_env

from nfzoo import _compat
from nfzoo.layers import InvertibleLinear
from nfzoo.nets import Dense

tfb, tfd = tfp.bijectors, tfp.distributions


#: the hooks under MirroredStrategy on two logical CPUs; prints one JSON line of results
TWO_REPLICAS = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from nfzoo import _compat

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync,
       "multi_worker": _compat.in_multi_worker_mode(strategy)}

def per_replica(fn):
    values = strategy.run(tf.function(fn))
    return [float(t) for t in strategy.experimental_local_results(values)]

out["scaled"] = per_replica(lambda: _compat.scale_loss_for_distribution(tf.constant(3.0)))

def flag():
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.cast(_compat.all_replicas(tf.not_equal(replica, 1)), tf.float32)

out["all_one_fails"] = per_replica(flag)
out["all_none_fails"] = per_replica(lambda: tf.cast(_compat.all_replicas(tf.constant(True)),
                                                     tf.float32))

with strategy.scope():
    w = keras.Variable(1.0)
    opt = keras.optimizers.SGD(1.0)
    opt.build([w])

def step(pred):
    def apply(g):
        opt.apply_gradients([(g, w)])
    _compat.apply_if(tf.constant(pred), apply, (tf.constant(0.25),))
    return tf.constant(0.0)

strategy.run(tf.function(lambda: step(True)))
out["after_true"] = float(w.numpy())  # each replica's 0.25, summed: 1 - 0.5
strategy.run(tf.function(lambda: step(False)))
out["after_false"] = float(w.numpy())
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_replicas():
    result = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(s for s in result.stdout.splitlines() if s.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out["replicas"] == 2
    return out


# ---- XLA ------------------------------------------------------------------------------


def test_in_xla_context():
    seen = {}

    def probe(tag):
        seen[tag] = _compat.in_xla_context()
        return tf.constant(0.0)

    inner = tf.function(lambda: probe("called from xla"))
    tf.function(lambda: probe("xla"), jit_compile=True)()
    tf.function(lambda: inner(), jit_compile=True)()
    tf.function(lambda: probe("graph"))()
    probe("eager")
    assert seen == {"xla": True, "called from xla": True, "graph": False, "eager": False}


def test_optimization_barrier():
    @tf.function(jit_compile=True)
    def fn(a, b):
        a2, b2 = _compat.optimization_barrier([tf.transpose(a), b])
        return a2, b2

    a, b = tf.reshape(tf.range(6.0), [2, 3]), tf.constant([1.0, 2.0])
    a2, b2 = fn(a, b)
    np.testing.assert_array_equal(a2.numpy(), a.numpy().T)
    np.testing.assert_array_equal(b2.numpy(), b.numpy())
    graph = fn.get_concrete_function(a, b).graph
    assert "XlaOptimizationBarrier" in {op.type for op in graph.get_operations()}
    # XLA keeps the barrier: the transpose is not folded into the consumer's layout
    assert "opt-barrier" in fn.experimental_get_compiler_ir(a, b)(stage="hlo")


# ---- freezing graphs for export -------------------------------------------------------


def test_freeze_variables():
    v = tf.Variable([[1.0, 2.0], [3.0, 4.0]])

    @tf.function
    def fn(x):
        y = tf.matmul(x, v)
        return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0), (0, y))[1]

    x = tf.constant([[1.0, 1.0]])
    concrete = fn.get_concrete_function(tf.TensorSpec([None, 2]))
    frozen = _compat.freeze_variables(concrete, lower_control_flow=False)
    graph_def = frozen.graph.as_graph_def()
    ops = {n.op for n in graph_def.node} | {
        n.op for f in graph_def.library.function for n in f.node_def
    }
    assert "VarHandleOp" not in ops and "ReadVariableOp" not in ops
    assert ops & {"While", "StatelessWhile"}  # control flow kept functional
    assert len(frozen.inputs) == 1  # the variable is no input any more
    want = fn(x).numpy()
    v.assign(tf.zeros_like(v))  # the frozen function holds the value it was frozen with
    np.testing.assert_array_equal(frozen(x)[0].numpy(), want)


# ---- distribution strategies ----------------------------------------------------------


def test_in_multi_worker_mode(two_replicas):
    assert not _compat.in_multi_worker_mode(tf.distribute.get_strategy())
    assert not _compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert not two_replicas["multi_worker"]  # two replicas, one worker


#: a MultiWorkerMirroredStrategy worker: prints whether it sees more than one worker
WORKER = """
import tensorflow as tf
from nfzoo import _compat
strategy = tf.distribute.MultiWorkerMirroredStrategy()
print("RESULT", strategy.num_replicas_in_sync, _compat.in_multi_worker_mode(strategy))
"""


@pytest.mark.slow
def test_in_multi_worker_mode_with_two_workers():
    """Two worker processes (half a minute): the default suite reaches the same answer
    through tests/test_distributed.py, whose multi-worker fit fails in Keras's reduction of
    logs unless ``in_multi_worker_mode`` holds there."""
    results = run_local_workers([sys.executable, "-c", WORKER], timeout=300)
    for returncode, stdout, stderr in results:
        assert returncode == 0, stderr[-3000:]
        assert "RESULT 2 True" in stdout, stdout


def test_scale_loss_for_distribution(two_replicas):
    loss = tf.constant(3.0)
    assert float(_compat.scale_loss_for_distribution(loss)) == 3.0
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert float(_compat.scale_loss_for_distribution(loss)) == 3.0
    assert two_replicas["scaled"] == [1.5, 1.5]  # the replicas' sum is the global mean


def test_all_replicas(two_replicas):
    assert bool(_compat.all_replicas(tf.constant(False))) is False
    assert bool(_compat.all_replicas(tf.constant(True))) is True
    assert two_replicas["all_one_fails"] == [0.0, 0.0]  # replica 1 said no: both say no
    assert two_replicas["all_none_fails"] == [1.0, 1.0]


@pytest.mark.parametrize("where", ["default", "one-device mirrored"])
def test_apply_if(where):
    """The branch runs an optimizer step (a merge_call under MirroredStrategy) only when
    ``pred`` holds."""
    strategy = (
        tf.distribute.get_strategy()
        if where == "default"
        else tf.distribute.MirroredStrategy(["/cpu:0"])
    )
    with strategy.scope():
        w = keras.Variable(1.0)
        opt = keras.optimizers.SGD(1.0)
        opt.build([w])

    def step(pred):
        def apply(g):
            opt.apply_gradients([(g, w)])

        _compat.apply_if(tf.constant(pred), apply, (tf.constant(0.25),))
        return tf.constant(0.0)

    strategy.run(tf.function(lambda: step(True)))
    assert float(w.numpy()) == 0.75
    strategy.run(tf.function(lambda: step(False)))
    assert float(w.numpy()) == 0.75


def test_apply_if_on_two_replicas(two_replicas):
    assert two_replicas["after_true"] == 0.5  # both replicas' steps, summed by SGD's reduce
    assert two_replicas["after_false"] == 0.5


# ---- one object that is a Keras layer and a TFP bijector ------------------------------


class _CachedScale(tfb.Bijector):
    """y = a x for a variable a, counting how often each direction is computed; TFP's cache."""

    def __init__(self, a):
        super().__init__(forward_min_event_ndims=0, name="scale")
        self.a = a
        self.calls = {"forward": 0, "inverse": 0}

    def _forward(self, x):
        self.calls["forward"] += 1
        return self.a * x

    def _inverse(self, y):
        self.calls["inverse"] += 1
        return y / self.a

    def _forward_log_det_jacobian(self, x):
        return tf.math.log(tf.abs(self.a)) * tf.ones_like(x)


@_compat.without_bijector_cache
class _Scale(_CachedScale):
    """The same without a cache."""


def test_without_bijector_cache():
    """Every call computes, so results follow the weights and carry their gradient; TFP's
    own cache, which is replaced, would answer from memory."""
    x = tf.constant([1.0, 2.0])
    cached = _CachedScale(tf.Variable(2.0))
    y = cached.forward(x)
    cached.inverse(y)
    assert cached.calls == {"forward": 1, "inverse": 0}  # TFP's cache answered the inverse

    a = tf.Variable(2.0)
    fresh = _Scale(a)
    y = fresh.forward(x)
    np.testing.assert_allclose(fresh.inverse(y).numpy(), x.numpy())
    assert fresh.calls == {"forward": 1, "inverse": 1}
    a.assign(3.0)
    np.testing.assert_allclose(fresh.forward(x).numpy(), [3.0, 6.0])  # not the stale [2, 4]
    with tf.GradientTape() as tape:
        z = fresh.inverse(fresh.forward(x))
        loss = tf.reduce_sum(fresh.forward(x) ** 2)
    np.testing.assert_allclose(z.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, a).numpy(), 2 * 3.0 * 5.0)


def test_no_bijector_cache():
    """``NoBijectorCache`` answers what TFP asks its cache, by computing, each time."""
    x = tf.constant([1.0, 2.0])
    bijector = _Scale(tf.Variable(2.0))
    cache = type(bijector)._cache
    assert isinstance(cache, _compat.NoBijectorCache)
    bound = _compat.NoBijectorCache.__get__(cache, bijector)
    np.testing.assert_allclose(bound.forward(x).numpy(), [2.0, 4.0])
    np.testing.assert_allclose(bound.inverse(x).numpy(), [0.5, 1.0])
    assert bijector.calls == {"forward": 1, "inverse": 1}
    assert bound.forward_attributes(x) == {} and bound.inverse_attributes(x) == {}
    # the layers' own log-dets come through: TFP's ldj asks the cache for attributes only
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(x, 0).numpy(), [np.log(2.0)] * 2)


def test_module_name():
    module, bijector = tf.Module(name="first"), tfb.Exp(name="first")
    assert _compat.module_name(module) == "first" == _compat.module_name(bijector)


def test_set_module_name():
    module, bijector = tf.Module(name="first"), tfb.Exp(name="first")
    for obj in (module, bijector):
        _compat.set_module_name(obj, "second")
        assert obj.name == "second" and _compat.module_name(obj) == "second"


class _Bare(tfb.Bijector):
    def __init__(self):  # initialised later, as a second base class is
        pass

    def _forward(self, x):
        return 2.0 * x

    def _inverse(self, y):
        return y / 2.0

    def _forward_log_det_jacobian(self, x):
        return tf.reduce_sum(tf.fill(tf.shape(x), tf.math.log(2.0)), axis=-1)


def test_init_bijector():
    with tf.Graph().as_default(), tf.name_scope("outer"):
        tfb.Exp(name="twice")  # takes the name: TFP uniquifies the next one in this graph
        assert tfb.Exp(name="twice").name != "twice"
        b = _Bare()
        _compat.init_bijector(b, forward_min_event_ndims=1, is_constant_jacobian=True, name="twice")
        assert b.name == "twice"  # the name given, not TFP's rewrite
    assert b.parameters == {}
    assert b.forward_min_event_ndims == 1 and b.is_constant_jacobian
    ldj = b.forward_log_det_jacobian(tf.constant([1.0, 1.0]), event_ndims=1)
    assert float(ldj) == pytest.approx(2 * np.log(2.0))


def test_init_bijector_on_a_layer():
    """A BijectorLayer keeps Keras's name under a name scope and has no TFP parameters."""
    with tf.name_scope("outer"):
        layer = InvertibleLinear(name="mixing")
    assert layer.name == "mixing" and layer.parameters == {}
    assert tfb.Bijector.name.fget(layer) == "mixing" == tf.Module.name.fget(layer)


def test_expose_module_variables():
    class Holder(tf.Module):
        pass

    holder = Holder()
    holder.w = keras.Variable(np.ones(2, np.float32))
    assert holder.trainable_variables == ()  # a Keras variable is not a tf.Variable
    _compat.expose_module_variables(holder, [holder.w])
    (seen,) = holder.trainable_variables
    assert isinstance(seen, tf.Variable)
    holder.w.assign([3.0, 4.0])  # the same storage
    np.testing.assert_array_equal(seen.numpy(), [3.0, 4.0])

    layer = InvertibleLinear(seed=0)
    layer.build((None, 3))
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(3)), layer)
    refs = {v.ref() for v in dist.trainable_variables}
    assert refs and refs == {w.value.ref() for w in layer.trainable_weights}


def test_keras_operation_call():
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    x = tf.constant([[1.0, -2.0]])
    np.testing.assert_allclose(
        _compat.keras_operation_call(dense, x).numpy(), dense.call(x).numpy()
    )
    symbolic = _compat.keras_operation_call(dense, keras.Input((2,)))
    assert isinstance(symbolic, keras.KerasTensor) and tuple(symbolic.shape) == (None, 3)

    layer = InvertibleLinear(seed=0)  # Keras's Layer.__call__ reaches Operation through it
    model = keras.Model(inputs := keras.Input((3,)), layer(inputs))
    z = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    np.testing.assert_allclose(model(z).numpy(), layer.forward(z).numpy(), rtol=1e-6)


def test_dense_is_plain():
    plain = keras.layers.Dense(4)
    plain.build((None, 8))
    assert _compat.dense_is_plain(plain)
    lora = keras.layers.Dense(4)
    lora.build((None, 8))
    lora.enable_lora(2)
    assert not _compat.dense_is_plain(lora)
    quantized = keras.layers.Dense(4)
    quantized.build((None, 8))
    quantized.quantize("int8")
    assert not _compat.dense_is_plain(quantized)
    assert _compat.dense_is_plain(Dense(4))  # nfzoo's own, before it is built


def test_dense_is_plain_routes_lora_to_keras():
    """nfzoo's Dense with LoRA gives what Keras's Dense gives with the same weights."""
    rng = np.random.RandomState(0)
    ours, theirs = Dense(4), keras.layers.Dense(4)
    for layer in (ours, theirs):
        layer.build((None, 8))
        layer.enable_lora(2)
    for a, b in zip(ours.weights, theirs.weights):
        value = rng.randn(*a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    x = rng.randn(5, 8).astype(np.float32)
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-6)
