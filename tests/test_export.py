"""Export: every builder's flow exports to SavedModel, ONNX and TFLite and each artifact
computes what the Keras model computes, run in its own runtime; exported artifacts run in a
process that never imports TensorFlow; a failed export leaves nothing behind.

Flows are small (event_dim 3, two layers of 16 hidden units) and perturbed away from the
identity initialisation, so parity is tested at a generic point.
"""

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import perturb

import nfzoo
from nfzoo.exporting import TOLERANCE, ExportError, export, scaled_error
from nfzoo.exporting import graphs as export_graphs

ARCHS = nfzoo.list_architectures()
#: conditional forms exported by the default suite (every one: the slow suite)
CONDITIONAL = ["maf|context", "nsf|context", "nsf-ar|context"]
ALL_CONDITIONAL = [f"{a}|context" for a in nfzoo.list_architectures(conditional=True)]
DIM = 3
CONTEXT_DIM = 2
REPO = Path(__file__).resolve().parents[1]
#: perturbation of the weights; larger values make the sequential IAF inverse so
#: ill-conditioned that float32 Keras itself is ~1e-4 away from the float64 answer
PERTURB_SCALE = 0.1


def init_data(flow, rng, n=256):
    """Data to initialise ActNorm: shifted Gaussians, or dequantized counts in [0, K] for
    flows with logit pre-processing."""
    shape = (n, *flow.data_event_shape)
    logit = [la for la in flow.flow_layers if isinstance(la, nfzoo.layers.Logit)]
    if logit:
        return (rng.randint(0, logit[0].num_levels, shape) + rng.rand(*shape)).astype(np.float32)
    return (2.0 * rng.standard_normal(shape) + 1.0).astype(np.float32)


def small_flow(arch: str, seed: int = 0):
    """A small perturbed flow of ``arch``; "arch|context" is its conditional form (with a
    conditional base)."""
    arch, _, variant = arch.partition("|")
    conditional = {"context_dim": CONTEXT_DIM, "conditional_base": True} if variant else {}
    entry = nfzoo.architecture(arch)
    if entry.event_rank == 3:  # the registered small example (e.g. a 4x4 two-level Glow)
        flow = nfzoo.build(arch, entry.example_shape, seed=seed, **dict(entry.example_options))
    else:
        small = {"num_layers": 2, "hidden_units": [16]}
        options = {k: v for k, v in small.items() if k in entry.options}
        flow = nfzoo.build(arch, DIM, seed=seed, **options, **conditional)
    rng = np.random.RandomState(seed)
    x = init_data(flow, rng)
    flow.initialize(x, **context_for(flow, len(x), rng))
    perturb(flow, seed, scale=PERTURB_SCALE)
    return flow


def context_for(flow, n, rng) -> dict:
    """``{"context": [n, C] float32}`` for a conditional flow, else ``{}``."""
    if flow.context_dim is None:
        return {}
    return {"context": rng.standard_normal((n, flow.context_dim)).astype(np.float32)}


def tflite_custom_ops(path: Path) -> list[str]:
    """The custom (non-builtin) operators of a .tflite file, Flex ops included, read from its
    operator codes: LiteRT can run only builtins without extra delegates."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    return sorted(c.CustomCode().decode() for c in codes if c.CustomCode() is not None)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: builders whose export runs with -m slow only (the default suite has a time budget): the
#: image builders (about a minute each; the shelf's glow-digits and realnvp-image-digits are
#: checked by default) and those whose export kernels another default case shares: iaf (MADE,
#: as maf), nice (couplings, as realnvp), radial and the Sylvester variants other than
#: orthogonal (the same residual export path)
SLOW_EXPORTS = {
    *nfzoo.list_architectures(event_rank=3),
    "iaf",
    "nice",
    "radial",
    "sylvester-householder",
    "sylvester-triangular",
}
EXPORT_CASES = [
    pytest.param(a, marks=pytest.mark.slow) if a in SLOW_EXPORTS else a for a in ARCHS + CONDITIONAL
]


@pytest.mark.parametrize("arch", EXPORT_CASES)
def test_every_builder_exports_with_parity(arch, tmp_path):
    check_export_with_parity(arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(set(ALL_CONDITIONAL) - set(CONDITIONAL)))
def test_every_conditional_builder_exports_with_parity(arch, tmp_path):
    check_export_with_parity(arch, tmp_path)


def check_export_with_parity(arch, tmp_path):
    flow = small_flow(arch)
    out = tmp_path / arch.replace("|", "-")
    manifest = export(flow, out)

    expected = {"generate", "generate_and_log_prob", "sample"}
    if flow.has_inverse:
        expected |= {"log_prob", "encode"}
    else:
        assert set(manifest["unavailable"]) == {"log_prob", "encode"}
    assert set(manifest["endpoints"]) == expected
    assert manifest == json.loads((out / "manifest.json").read_text())
    for fmt in ("saved_model", "onnx", "tflite"):
        results = manifest["parity"]["results"][fmt]
        assert set(results) == expected, fmt
        for ep, by_batch in results.items():
            assert set(by_batch) == {"batch_1", "batch_1000", "batch_10000"}
            for record in by_batch.values():
                if ep == "sample":
                    assert record["mean_z_score"] <= 6.0
                else:
                    assert record["max_error"] <= record.get("tolerance", TOLERANCE), record
    for name, digest in manifest["files"].items():
        assert sha256(out / name) == digest, name
    assert manifest["formats"]["saved_model"]["serving_default"] == (
        "log_prob" if flow.has_inverse else "generate_and_log_prob"
    )

    # Independently of the export's own check: new inputs, another batch size, in the
    # runtimes directly.
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.RandomState(7)
    z = rng.standard_normal((5, *flow.base_event_shape)).astype(np.float32)
    c = context_for(flow, 5, rng)
    x = np.asarray(flow.generate(rng.standard_normal(z.shape).astype(np.float32), **c))
    keras_out = {"generate": {"x": flow.generate(z, **c)}}
    x_kgl, lp_kgl = flow.generate_and_log_prob(z, **c)
    keras_out["generate_and_log_prob"] = {"x": x_kgl, "log_prob": lp_kgl}
    if flow.has_inverse:
        keras_out["log_prob"] = {"log_prob": flow.log_prob(x, **c)}
        keras_out["encode"] = {"z": flow.encode(x, **c)}
    interpreter = Interpreter(model_path=str(out / "model.tflite"))
    assert tflite_custom_ops(out / "model.tflite") == []
    for ep, ref in keras_out.items():
        feed = {"x": x} if ep in ("log_prob", "encode") else {"z": z}
        feed.update(c)
        session = ort.InferenceSession(str(out / f"model.{ep}.onnx"))
        onnx_out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        tflite_out = interpreter.get_signature_runner(ep)(**feed)
        for key, value in ref.items():
            assert scaled_error(onnx_out[key], np.asarray(value)) <= TOLERANCE, (ep, key)
            assert scaled_error(tflite_out[key], np.asarray(value)) <= TOLERANCE, (ep, key)


def test_saved_model_signatures_run_in_tensorflow(tmp_path):
    import tensorflow as tf

    flow = small_flow("realnvp")
    export(flow, tmp_path / "m", formats=("saved_model",))
    assert not (tmp_path / "m" / "model.tflite").exists()
    loaded = tf.saved_model.load(str(tmp_path / "m" / "saved_model"))
    x = np.asarray(flow.sample(9, seed=3))
    out = loaded.signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(out["log_prob"], flow.log_prob(x), atol=TOLERANCE, rtol=0)
    samples = loaded.signatures["sample"](n=tf.constant(4))["x"]
    assert samples.shape == (4, DIM) and np.all(np.isfinite(samples))


def test_a_wrong_artifact_fails_the_export_and_leaves_nothing(tmp_path, monkeypatch):
    flow = small_flow("radial")

    def wrong(layer):  # drifts by 1e-3 per layer (two layers)
        def forward(z, context=None):
            x, ldj = layer._forward_and_log_det(z)
            return x + 1e-3, ldj

        return export_graphs.ExportKernel(forward, None)

    monkeypatch.setitem(export_graphs._KERNELS, nfzoo.layers.Radial, wrong)
    with pytest.raises(ExportError, match=r"onnx/generate at batch_1: x: max error 0\.002"):
        export(flow, tmp_path / "out", formats=("onnx",))
    assert list(tmp_path.iterdir()) == []  # no partial folder, no destination


def test_existing_destination_needs_overwrite(tmp_path):
    flow = small_flow("sylvester-triangular")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="already exists"):
        export(flow, tmp_path / "out", formats=("onnx",))
    # overwrite replaces only a folder nfzoo wrote: the user's file stays where it was
    with pytest.raises(ValueError, match="not a folder written by nfzoo"):
        export(flow, tmp_path / "out", formats=("onnx",), overwrite=True)
    assert (tmp_path / "out" / "old.txt").read_text() == "old"
    export(flow, tmp_path / "exported", formats=("onnx",))
    first = (tmp_path / "exported" / "manifest.json").read_text()
    export(flow, tmp_path / "exported", formats=("onnx", "tflite"), overwrite=True)
    assert (tmp_path / "exported" / "model.tflite").exists()
    assert (tmp_path / "exported" / "manifest.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "out"]


def test_bad_arguments_are_named():
    flow = small_flow("planar")
    with pytest.raises(ValueError, match=r"subset of .*received \('pb',\)"):
        export(flow, "unused", formats=("pb",))
    with pytest.raises(ValueError, match="float32 flows.*received a float64 flow"):
        export(nfzoo.build("planar", DIM, dtype="float64", num_layers=1), "unused")
    with pytest.raises(ValueError, match="expects an nfzoo.Flow; received str"):
        export("maf", "unused")
    flow.trainable_weights[0].assign(np.full(flow.trainable_weights[0].shape, np.nan))
    with pytest.raises(ValueError, match="non-finite weights"):
        export(flow, "unused")


def test_scaled_error_is_absolute_then_relative():
    assert scaled_error(np.array([1.0]), np.array([1.00005])) == pytest.approx(5e-5)
    assert scaled_error(np.array([1000.0]), np.array([1000.05])) == pytest.approx(5e-5, rel=1e-3)
    assert scaled_error(np.array([np.nan]), np.array([1.0])) == np.inf
    assert scaled_error(np.zeros((2, 3)), np.zeros((3, 2))) == np.inf


def test_parity_allows_the_models_own_rounding_spread_and_no_more():
    """Beyond TOLERANCE an output passes only within ROUNDING_FACTOR x the Keras model's own
    eager-vs-XLA spread; within TOLERANCE the spread is never computed."""
    from nfzoo.exporting import ROUNDING_FACTOR, _measure
    from nfzoo.exporting.graphs import ENDPOINTS

    endpoint = ENDPOINTS["log_prob"]
    x = np.linspace(-3.0, 3.0, 10_000)[:, None].astype(np.float32)
    reference = {"log_prob": -np.abs(x[:, 0]) * 10.0}
    inputs, expected = {"x": x}, {"log_prob": reference}
    calls = []

    def runner_off_by(delta):
        return lambda ep, feed: {"log_prob": reference["log_prob"][: len(feed["x"])] + delta}

    def spread_of(value):
        def spread(ep):
            calls.append(ep)
            return {"log_prob": value}

        return spread

    def passed(delta, spread_value):
        res = _measure(
            runner_off_by(delta), None, endpoint, inputs, expected, spread_of(spread_value)
        )
        return all(r["passed"] for r in res.values()), res

    ok, res = passed(0.5 * TOLERANCE, 1.0)
    assert ok and calls == [] and all("tolerance" not in r for r in res.values())
    ok, res = passed(3 * TOLERANCE, TOLERANCE)  # spread 1e-4: allowance 4e-4 covers 3e-4
    assert (
        ok
        and calls
        and res["batch_10000"]["tolerance"] == pytest.approx(ROUNDING_FACTOR * TOLERANCE)
    )
    ok, _ = passed(3 * TOLERANCE, 0.5 * TOLERANCE)  # allowance 2e-4 does not
    assert not ok
    ok, _ = passed(3 * TOLERANCE, 0.0)  # no compiled reference: TOLERANCE alone
    assert not ok


# ---- deployment without TensorFlow -------------------------------------------------------

#: Runs every export folder given on the command line with onnxruntime and LiteRT only,
#: against the reference outputs in its manifest. Refuses to import TensorFlow at all.
NO_TF_CHECK = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"):
                raise ImportError(f"{name} imported in the no-TensorFlow check")

    sys.meta_path.insert(0, NoTensorFlow())
    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    checked = 0
    for folder in map(Path, sys.argv[1:]):
        m = json.loads((folder / "manifest.json").read_text())
        for name, digest in m["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        tol = m["parity"]["tolerance"]
        ref = m["reference"]
        lite = Interpreter(model_path=str(folder / m["formats"]["tflite"]["path"]))
        for ep, outputs in ref["outputs"].items():
            args = [i["name"] for i in m["endpoints"][ep]["inputs"]]
            feed = {a: np.asarray(ref["inputs"][a], np.float32) for a in args}
            onnx = ort.InferenceSession(str(folder / m["formats"]["onnx"]["files"][ep]))
            got = {
                "onnx": dict(zip([o.name for o in onnx.get_outputs()], onnx.run(None, feed))),
                "tflite": lite.get_signature_runner(ep)(**feed),
            }
            for runtime, out in got.items():
                for key, want in outputs.items():
                    want = np.asarray(want)
                    scale = np.where(np.abs(want) > 100, np.abs(want), 1.0)
                    err = float(np.max(np.abs(out[key] - want) / scale))
                    assert err <= tol, (str(folder), runtime, ep, key, err)
                    checked += 1
        for n in (1, 17):
            feed = {"n": np.array(n, np.int32)}
            want = (n, *m["flow"]["event_shape"])
            if m["flow"].get("context_dim"):
                feed["context"] = np.asarray(ref["inputs"]["context"][:3], np.float32)
                want = (n, 3, *m["flow"]["event_shape"])
            x = lite.get_signature_runner("sample")(**feed)["x"]
            onnx = ort.InferenceSession(str(folder / m["formats"]["onnx"]["files"]["sample"]))
            (y,) = onnx.run(None, feed)
            assert x.shape == y.shape == want, (x.shape, y.shape, want)
            assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert not any(k.split(".")[0] == "tensorflow" for k in sys.modules), "tensorflow imported"
    print(f"OK {checked}")
    """
)


def run_without_tensorflow(folders) -> str:
    result = subprocess.run(
        [sys.executable, "-c", NO_TF_CHECK, *map(str, folders)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_exported_artifacts_run_without_tensorflow(tmp_path):
    flows = {
        "maf": small_flow("maf"),
        "sylvester-orthogonal": small_flow("sylvester-orthogonal"),
        "nsf-context": small_flow("nsf|context"),
    }
    for name, flow in flows.items():
        export(flow, tmp_path / name, formats=("onnx", "tflite"))
    out = run_without_tensorflow([tmp_path / name for name in flows])
    # maf and nsf: 4 endpoints with 5 outputs; sylvester: 2 endpoints with 3; 2 runtimes
    assert out.strip() == f"OK {2 * (5 + 3 + 5)}"


#: Feeds wrong inputs to one endpoint of an export folder in one runtime, each in a new
#: session, and prints what happened: "refused" (an exception) or "ACCEPTED" (a result).
#: Runs in its own process: a runtime that crashes instead of refusing fails the test.
WRONG_INPUTS = textwrap.dedent(
    """
    import sys
    import numpy as np
    folder, runtime, endpoint = sys.argv[1:4]
    D, C = 3, 2
    x, c = np.zeros((4, D), np.float32), np.zeros((4, C), np.float32)
    cases = {
        "too wide": {"x": np.zeros((4, D + 1), np.float32), "context": c},
        "too narrow": {"x": np.zeros((4, D - 1), np.float32), "context": c},
        "no batch axis": {"x": np.zeros(D, np.float32), "context": c[:1]},
        "rank 3": {"x": np.zeros((2, 2, D), np.float32), "context": c[:2]},
        "context too wide": {"x": x, "context": np.zeros((4, C + 1), np.float32)},
        "fewer contexts": {"x": x, "context": c[:1]},
        "right": {"x": x, "context": c},
    }
    if endpoint == "sample":
        cases = {
            "n < 0": {"n": np.array(-1, np.int32), "context": c[:1]},
            "right": {"n": np.array(3, np.int32), "context": c[:1]},
        }

    def run(feed):
        if runtime == "onnx":
            import onnxruntime as ort
            s = ort.InferenceSession(f"{folder}/model.{endpoint}.onnx")
            return s.run(None, feed)
        if runtime == "tflite":
            from ai_edge_litert.interpreter import Interpreter
            lite = Interpreter(model_path=f"{folder}/model.tflite")
            return lite.get_signature_runner(endpoint)(**feed)
        import tensorflow as tf
        sm = tf.saved_model.load(f"{folder}/saved_model")
        return sm.signatures[endpoint](**{k: tf.constant(v) for k, v in feed.items()})

    for name, feed in cases.items():
        try:
            run(feed)
            print(name, "ACCEPTED")
        except Exception:
            print(name, "refused")
    """
)


@pytest.mark.parametrize("runtime", ["tflite", "onnx", "saved_model"])
def test_every_runtime_refuses_wrong_inputs(runtime, tmp_path):
    flow = small_flow("realnvp|context")
    export(flow, tmp_path / "f")
    for endpoint in ("log_prob", "sample"):
        result = subprocess.run(
            [sys.executable, "-c", WRONG_INPUTS, str(tmp_path / "f"), runtime, endpoint],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        lines = dict(line.rsplit(" ", 1) for line in result.stdout.strip().splitlines())
        assert lines.pop("right") == "ACCEPTED"
        assert set(lines.values()) == {"refused"}, (endpoint, lines)


def test_onnx_sample_differs_between_processes(tmp_path):
    export(small_flow("maf"), tmp_path / "f", formats=("onnx",))
    script = (
        "import sys, numpy as np, onnxruntime as ort;"
        "s = ort.InferenceSession(sys.argv[1]);"
        "print(s.run(None, {'n': np.array(3, np.int32)})[0].ravel().tolist())"
    )
    draws = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "f" / "model.sample.onnx")],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        for _ in range(2)
    ]
    assert draws[0] and draws[0] != draws[1]


def test_shipped_artifacts_run_without_tensorflow():
    folders = sorted(p.parent for p in (REPO / "export").glob("*/manifest.json"))
    if not folders:
        pytest.skip("export/ holds no artifacts yet (tools/export_zoo.py writes them)")
    assert run_without_tensorflow(folders).startswith("OK ")


def test_shipped_artifacts_fit_the_budget():
    total = sum(p.stat().st_size for p in (REPO / "export").rglob("*") if p.is_file())
    assert total < 60e6, f"export/ holds {total / 1e6:.1f} MB; the budget is 60 MB"


def test_cli_exports_a_saved_flow(tmp_path, capsys):
    from nfzoo.cli import main as nfzoo_main

    def main(argv):
        return nfzoo_main(["export", *argv])

    flow = small_flow("sylvester-householder")
    flow.save(tmp_path / "flow.keras")
    out = tmp_path / "out"
    assert main([str(tmp_path / "flow.keras"), "--formats", "onnx", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "flow" and set(manifest["formats"]) == {"onnx"}
    assert "| flow | generate | " in capsys.readouterr().out
    assert main([str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o2")]) == 2  # input
    assert "missing.keras" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_shipped_artifacts_match_the_pretrained_weights():
    """An export made from weights that have since been retrained is stale: rerun
    tools/export_zoo.py."""
    manifests = [json.loads(p.read_text()) for p in (REPO / "export").glob("*/manifest.json")]
    if not manifests:
        pytest.skip("export/ holds no artifacts yet (tools/export_zoo.py writes them)")
    for m in manifests:
        entry = nfzoo.pretrained_entry(m["source"]["pretrained"])
        assert m["source"]["weights_sha256"] == entry.weights_sha256, m["name"]
        assert m["source"]["config_sha256"] == entry.config_sha256, m["name"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_builder_exports_at_default_size(arch, tmp_path):
    """The builders' default sizes (e.g. MADE [64, 64] x 5 layers), two moons' dimension;
    image builders on 8x8 digits, after 50 training steps. (A random perturbation of every
    weight of a 16-step, 64-channel conv flow gives log-scales no trained model has, and
    float32 rounding then grows past 1e-4 in every runtime, TensorFlow's own included.)"""
    if nfzoo.architecture(arch).event_rank == 3:
        flow = nfzoo.build(arch, (8, 8, 1), seed=1, num_levels=17)
        train = nfzoo.data.dequantize(nfzoo.data.digits_images()[0], seed=1)
        flow.fit(train, batch_size=64, epochs=3, steps_per_epoch=17, verbose=0)
    else:
        flow = nfzoo.build(arch, 2, seed=1)
        flow.initialize(init_data(flow, np.random.RandomState(1)))
        perturb(flow, 1, scale=PERTURB_SCALE)
    manifest = export(flow, tmp_path / arch)
    for fmt, eps in manifest["parity"]["results"].items():
        for ep, by_batch in eps.items():
            for record in by_batch.values():
                assert ep == "sample" or record["max_error"] <= TOLERANCE, (fmt, ep, record)
