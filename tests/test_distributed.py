"""Multi-device training with TensorFlow's own strategies under Keras fit: MirroredStrategy
on two logical CPU devices, and MultiWorkerMirroredStrategy with two worker processes on
loopback. Each runs in fresh processes (devices and TF_CONFIG are fixed at TF start-up)."""

import subprocess
import sys

import numpy as np
from processes import run_local_workers, subprocess_env

import nfzoo

TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from nfzoo.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    argv = ["train", "maf", "--data", "moons", "--num-points", "4000", "--steps", "200"]
    result = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, *argv, "--strategy", "mirrored", "--out", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 replica(s)" in result.stdout
    flow = nfzoo.load(out)
    assert np.isfinite(flow.log_prob(nfzoo.data.make_moons(100))).all()


def test_multi_worker_strategy_with_two_local_workers(tmp_path):
    out = tmp_path / "multiworker"
    argv = [
        sys.executable,
        "-m",
        "nfzoo.cli",
        "train",
        "realnvp",
        "--data",
        "moons",
        "--num-points",
        "4000",
        "--steps",
        "100",
        "--strategy",
        "multiworker",
        "--out",
        str(out),
    ]
    results = run_local_workers(argv)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    assert "on 2 replica(s)" in results[0][1]  # the chief reports and writes the model
    flow = nfzoo.load(out)
    assert np.isfinite(flow.log_prob(nfzoo.data.make_moons(100))).all()


NAN_UNDER_MIRRORED = """
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import nfzoo
x = nfzoo.data.make_moons(512, seed=0)
x[300] = np.nan  # one replica's half of the second batch of 256
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    flow = nfzoo.build("maf", 2, num_layers=2, hidden_units=[16])
    flow.compile(learning_rate=1e-3, steps_per_execution=1, jit_compile=False)  # as train_flow
try:
    flow.fit(x, batch_size=256, epochs=1, shuffle=False, verbose=0)
except nfzoo.flow.NonFiniteLossError as e:
    ok = all(np.isfinite(w.numpy()).all() for w in flow.weights)
    print("stopped", "finite" if ok else "NaN weights", e)
else:
    print("no error")
"""


def test_a_non_finite_step_on_one_replica_stops_mirrored_training():
    """The step guard under MirroredStrategy: the replicas agree on the failed step, none
    applies it, and fit raises with every weight finite."""
    result = subprocess.run(
        [sys.executable, "-c", NAN_UNDER_MIRRORED],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped finite" in result.stdout and "step 2" in result.stdout, result.stdout
