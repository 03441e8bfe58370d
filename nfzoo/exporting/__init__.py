"""Export a Flow to SavedModel (TF Serving), ONNX (onnxruntime) and TFLite (LiteRT), with a
mandatory parity check of every artifact in its own runtime.

    nfzoo.export(flow, "out/maf", formats=("saved_model", "onnx", "tflite"))

(``nfzoo.export`` is this package's ``export``; the package is called ``exporting`` so that the
function's name shadows no module.)

writes ``out/maf/`` with ``saved_model/``, ``model.<endpoint>.onnx``, ``model.tflite`` and
``manifest.json``. Endpoints (all on a dynamic batch, float32):

* ``log_prob(x) -> log_prob``: log q(x), inverse pass (flows whose layers all have an inverse);
* ``encode(x) -> z``: z = f(x) (same condition);
* ``generate(z) -> x``: x = g(z), deterministic: noise in, sample out;
* ``generate_and_log_prob(z) -> x, log_prob``: one forward pass, also without an inverse;
* ``sample(n) -> x``: n samples with noise drawn in the graph (RandomStandardNormal).

A conditional flow's endpoints also take ``context`` [batch, C] (``sample``: n draws for each
context row, x ``[n, batch, *event_shape]``).

Before anything is published every artifact is loaded in its runtime (TensorFlow for the
SavedModel, onnxruntime, the ``ai_edge_litert`` interpreter) and run at batch 1, 1000 and
10,000 (data inputs: the flow's own samples) on fixed inputs against the Keras model
(``flow.log_prob``, ``flow.encode``, ...). An output that differs by more than
``TOLERANCE`` (absolute; relative where ``|value| > 100``) fails the export with ``ExportError``,
unless the Keras model's own float32 answer is not determined that finely: a deep flow run op
by op and compiled by XLA (the same weights and inputs; only summation order and fusion
differ) can disagree by more than 1e-4 on its own samples. The artifact then passes within
``ROUNDING_FACTOR`` times that spread, and the manifest records the tolerance applied;
``sample`` is random, so it is checked by shape, finiteness and its mean against the Keras
model's samples. Everything is written to a temporary folder beside the
destination and renamed into place only once every check has passed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.exporting.formats import (
    ONNX_OPSET,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    OnnxRunner,
    SavedModelRunner,
    TFLiteRunner,
    onnx_file,
    serving_default,
    write_onnx,
    write_saved_model,
    write_tflite,
)
from nfzoo.exporting.graphs import ENDPOINTS, freeze_endpoints, register_export_kernel
from nfzoo.files import atomic_directory, sha256_file
from nfzoo.flow import Flow

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "export", "register_export_kernel"]

FORMATS = ("saved_model", "onnx", "tflite")
#: parity tolerance: ``|artifact - keras| <= TOLERANCE``, divided by ``|keras|`` where
#: ``|keras| > 100``
TOLERANCE = 1e-4
#: batch sizes of the parity check. The data inputs are the flow's own samples (x = g(z) of
#: fixed noise), so the largest batch checks 10,000 in-distribution points: float32 rounding
#: differs between runtimes (summation order, fused kernels) and shows on some points only;
#: on glow-1d-moons, TF/Keras, onnxruntime and LiteRT are each up to 0.7-1e-4 from the
#: float64 answer on 20,000 of its samples, and 4e-5 from each other.
PARITY_BATCHES = (1, 1000, 10_000)
#: an output beyond TOLERANCE still passes within this many times the Keras model's own float32
#: rounding spread (largest |eager - XLA| on the same 10,000 inputs, ``_rounding_spread``).
#: glow-digits (2 levels x 8 steps): eager and XLA differ by 2.3e-4 in log_prob (values -27 to
#: -138) and 4.4e-4 in encode; each is 1e-4 to 3e-4 from the float64 answer, and the exported
#: graphs 1.0e-4 to 1.8e-4 from eager Keras.
ROUNDING_FACTOR = 4.0
#: rows of the reference inputs and outputs stored in the manifest
REFERENCE_ROWS = 8
#: seed of the fixed parity inputs
PARITY_SEED = 20261129
MANIFEST = "manifest.json"
_RUNTIME_OF = {"saved_model": "tensorflow", "onnx": "onnxruntime", "tflite": "ai_edge_litert"}


class ExportError(ValueError):
    """An artifact failed to convert or did not match the Keras model."""


def export(
    flow: Flow,
    directory: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    overwrite: bool = False,
    name: str | None = None,
    source: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Exports ``flow`` to ``directory`` in ``formats`` and returns the manifest.

    Args:
      flow: a float32 ``nfzoo.Flow`` with a vector event shape (built, trained or loaded).
      directory: destination folder; created atomically (temporary folder, then rename).
      formats: any of "saved_model", "onnx", "tflite".
      overwrite: replace an existing ``directory`` (otherwise that is an error).
      name: name recorded in the manifest (default: the flow's name).
      source: JSON-serialisable facts about where the flow came from (e.g. the pretrained
        entry and the sha256 of its weights), recorded as the manifest's "source".
      progress: called with one line as each format is converted and as each runtime's
        parity check starts (the CLI prints them); None: silent.

    Raises:
      ExportError: a conversion failed or an artifact differs from the Keras model; nothing
        is left at ``directory``.
      ValueError: bad arguments (unknown format, unsupported flow).
    """
    formats = _check_args(flow, formats)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        manifest = _export_into(
            flow, tmp, formats, name or flow.name, source or {}, progress or (lambda line: None)
        )
    return manifest


def _check_args(flow, formats) -> tuple[str, ...]:
    if not isinstance(flow, Flow):
        raise ValueError(f"export expects an nfzoo.Flow; received {type(flow).__name__}.")
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}; received {formats}.")
    if flow.compute_dtype != "float32":
        raise ValueError(
            f"export supports float32 flows (TFLite builtin kernels are float32); received a "
            f"{flow.compute_dtype} flow. Build or load it with dtype='float32'."
        )
    broken = [w.path for w in flow.weights if not np.all(np.isfinite(w.numpy()))]
    if broken:
        raise ValueError(
            f"export refuses a flow with non-finite weights (NaN or inf): {', '.join(broken)}. "
            "A diverged training run leaves them; retrain or reload the flow."
        )
    return tuple(f for f in FORMATS if f in formats)  # canonical order


def _export_into(flow: Flow, tmp: Path, formats, name: str, source: dict, progress) -> dict:
    progress(f"freezing the endpoints of {name}")
    frozen = freeze_endpoints(flow)
    endpoints = list(frozen)
    runners: dict[str, Any] = {}
    if "tflite" in formats:
        progress(
            "converting to tflite"
        )  # converted from a SavedModel with the declared input shapes
        declared = tmp / ".tflite-source"
        write_saved_model(frozen, declared)
        write_tflite(declared, endpoints, tmp / TFLITE_FILE)
        shutil.rmtree(declared)
        runners["tflite"] = TFLiteRunner(tmp / TFLITE_FILE)
    if "saved_model" in formats:
        progress("converting to saved_model")
        write_saved_model(frozen, tmp / SAVED_MODEL_DIR, relaxed=True)
        runners["saved_model"] = SavedModelRunner(tmp / SAVED_MODEL_DIR)
    if "onnx" in formats:
        progress(f"converting to onnx ({len(frozen)} endpoints)")
        for ep, fe in frozen.items():
            try:
                write_onnx(fe, tmp / onnx_file(ep))
            except ExportError:
                raise
            except Exception as e:
                raise ExportError(f"ONNX conversion of endpoint {ep!r} failed: {e}") from e
        runners["onnx"] = OnnxRunner(tmp)

    inputs, expected, keras_fns = _parity_inputs(flow, frozen)
    spreads = {}

    def spread(ep: str) -> dict:  # computed once per endpoint, and only when needed
        if ep not in spreads:
            spreads[ep] = _rounding_spread(keras_fns[ep], inputs, frozen[ep].endpoint, expected)
        return spreads[ep]

    parity: dict[str, dict] = {}
    failures = []
    for fmt in formats:
        progress(f"checking {fmt} in {_RUNTIME_OF[fmt]} at batch sizes {PARITY_BATCHES}")
        parity[fmt] = {}
        for ep in endpoints:
            try:
                endpoint = frozen[ep].endpoint
                parity[fmt][ep] = _measure(runners[fmt], flow, endpoint, inputs, expected, spread)
            except Exception as e:
                failures.append(f"{fmt}/{ep}: raised {type(e).__name__}: {e}")
                continue
            bad = {k: v for k, v in parity[fmt][ep].items() if not v["passed"]}
            failures += [f"{fmt}/{ep} at {k}: {v['detail']}" for k, v in bad.items()]
    runners.clear()
    if failures:
        raise ExportError(
            f"Export of {name!r} failed its parity check against the Keras model "
            f"(tolerance {TOLERANCE}, or {ROUNDING_FACTOR:g} x the Keras model's own float32 "
            "rounding spread where that is larger):\n  " + "\n  ".join(failures)
        )
    manifest = _manifest(flow, name, formats, frozen, parity, inputs, expected, tmp)
    manifest["source"] = source
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# ---- parity ------------------------------------------------------------------------------


def _parity_inputs(flow: Flow, frozen):
    """Fixed inputs (noise z, data x = g(z') from the Keras model, for a conditional flow
    contexts c = shift + scale * N(0, I), i.e. of the spread of the contexts it was fitted
    to, see ``Flow.standardized_context``) and the Keras model's outputs."""
    rng = np.random.RandomState(PARITY_SEED)
    n = max(PARITY_BATCHES)
    z = rng.standard_normal((n, *flow.base_event_shape)).astype(np.float32)
    inputs = {"z": z}
    kw: dict[str, Any] = {}
    if flow.context_dim is not None:
        u = rng.standard_normal((n, flow.context_dim))
        c = flow.context_shift.numpy() + flow.context_scale.numpy() * u
        inputs["context"] = c.astype(np.float32)
        kw = {"context": inputs["context"]}
    x = flow.generate(rng.standard_normal((n, *flow.base_event_shape)).astype(np.float32), **kw)
    inputs["x"] = np.asarray(x, np.float32)
    keras_fns = {
        "log_prob": lambda x: {"log_prob": flow.log_prob(x, **kw)},
        "encode": lambda x: {"z": flow.encode(x, **kw)},
        "generate": lambda z: {"x": flow.generate(z, **kw)},
        "generate_and_log_prob": lambda z: dict(
            zip(("x", "log_prob"), flow.generate_and_log_prob(z, **kw))
        ),
    }
    expected = {}
    for ep, fe in frozen.items():
        if ep in keras_fns:
            out = keras_fns[ep](inputs[fe.endpoint.inputs[0]])
            expected[ep] = {k: np.asarray(v) for k, v in out.items()}
    # sample: the Keras model's own samples (for the first context), to compare the mean with
    one = {k: v[:1] for k, v in kw.items()}
    expected["sample"] = {"x": np.asarray(flow.sample(4 * n, seed=PARITY_SEED, **one))}
    return inputs, expected, keras_fns


def _rounding_spread(keras_fn, inputs, endpoint, expected) -> dict:
    """How finely the Keras model's float32 answer is determined: ``scaled_error`` between
    the eager outputs (``expected``) and the same function compiled by XLA, on the full parity
    inputs, per output. An empty dict when XLA cannot compile it (no allowance is made)."""
    arg = inputs[endpoint.inputs[0]]
    try:
        compiled = tf.function(keras_fn, jit_compile=True)(tf.constant(arg))
    except tf.errors.OpError:  # an op XLA cannot compile: no compiled reference, no allowance
        return {}
    ref = expected[endpoint.name]
    return {k: scaled_error(np.asarray(v), ref[k]) for k, v in compiled.items() if k in ref}


def scaled_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / s, s = |reference| where |reference| > 100 else 1;
    inf when shapes differ or the artifact gives a non-finite value the reference has not."""
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    if actual.shape != reference.shape:
        return float("inf")
    scale = np.where(np.abs(reference) > 100.0, np.abs(reference), 1.0)
    err = np.abs(actual - reference) / scale
    err = np.where(np.isfinite(reference), err, np.where(actual == reference, 0.0, np.inf))
    return float(np.max(np.nan_to_num(err, nan=np.inf))) if err.size else 0.0


def _measure(runner, flow: Flow, endpoint, inputs, expected, spread=None) -> dict:
    """Runs ``endpoint`` at each parity batch size; returns per-batch error records. An
    output beyond ``TOLERANCE`` is judged against ``ROUNDING_FACTOR`` x ``spread(ep)[k]``
    (the Keras model's own rounding spread) where ``spread`` is given and that is larger."""
    ep = endpoint.name
    results = {}
    for batch in PARITY_BATCHES:
        key = f"batch_{batch}"
        if endpoint.random:
            feed = {"n": np.array(batch, np.int32)}
            if "context" in endpoint.inputs:
                feed["context"] = inputs["context"][:1]
            results[key] = _check_sample(runner(ep, feed), flow, batch, expected)
            continue
        out = runner(ep, {arg: inputs[arg][:batch] for arg in endpoint.inputs})
        missing = set(endpoint.outputs) - set(out)
        if missing:
            results[key] = {
                "max_error": None,
                "passed": False,
                "detail": f"outputs {sorted(missing)} missing; received {sorted(out)}",
            }
            continue
        errs = {k: scaled_error(out[k], expected[ep][k][:batch]) for k in endpoint.outputs}
        tolerances = {k: TOLERANCE for k in errs}
        if spread is not None and any(e > TOLERANCE for e in errs.values()):
            floor = spread(ep)
            for k in errs:
                tolerances[k] = max(TOLERANCE, ROUNDING_FACTOR * floor.get(k, 0.0))
        worst = max(errs.values())
        results[key] = {
            "max_error": worst,
            "passed": all(errs[k] <= tolerances[k] for k in errs),
            "detail": ", ".join(
                f"{k}: max error {e:.3g} (shape {np.shape(out[k])}, expected "
                f"{np.shape(expected[ep][k][:batch])})"
                + (f", tolerance {tolerances[k]:.3g}" if tolerances[k] > TOLERANCE else "")
                for k, e in errs.items()
            ),
        }
        if any(t > TOLERANCE for t in tolerances.values()):
            results[key]["tolerance"] = max(tolerances.values())
    return results


def _check_sample(out: dict, flow: Flow, n: int, expected) -> dict:
    """sample(n) is random: checks shape, finiteness, and the per-dimension mean against the
    Keras model's samples (z-score of the difference of means, at most 6)."""
    x = np.asarray(out.get("x"))
    ref = expected["sample"]["x"]
    want = (n, *ref.shape[1:])
    if x.shape != want or not np.all(np.isfinite(x)):
        return {
            "max_error": None,
            "passed": False,
            "detail": f"expected finite samples of shape {want}; received shape {x.shape}",
        }
    se = np.sqrt(ref.var(axis=0) / n + ref.var(axis=0) / len(ref)) + 1e-12
    z_score = float(np.max(np.abs(x.mean(axis=0) - ref.mean(axis=0)) / se))
    passed = n < 100 or z_score <= 6.0  # the mean of 1 sample says little
    return {
        "max_error": None,
        "mean_z_score": z_score,
        "passed": passed,
        "detail": f"sample mean z-score {z_score:.2f} against the Keras samples (limit 6)",
    }


# ---- manifest ----------------------------------------------------------------------------


def _versions() -> dict:
    out = {}
    for pkg in ("nfzoo", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        out[pkg] = _version(pkg)
    out["ai_edge_litert"] = _version("ai-edge-litert")
    out["numpy"] = np.__version__
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _manifest(flow, name, formats, frozen, parity, inputs, expected, tmp: Path) -> dict:
    data_shape, base_shape = list(flow.data_event_shape), list(flow.base_event_shape)
    shapes = {"x": [None, *data_shape], "z": [None, *base_shape], "n": [], "log_prob": [None]}
    shapes["context"] = [None, flow.context_dim]
    dtypes = {"n": "int32"}
    endpoints = {}
    for ep, fe in frozen.items():
        e = fe.endpoint
        sampled = ["n", *(["batch"] if flow.context_dim is not None else []), *data_shape]
        out_shapes = {"x": sampled} if e.random else {}
        endpoints[ep] = {
            "doc": e.doc,
            "inputs": [
                {"name": k, "shape": shapes[k], "dtype": dtypes.get(k, "float32")} for k in e.inputs
            ],
            "outputs": [
                {"name": k, "shape": out_shapes.get(k, shapes[k]), "dtype": "float32"}
                for k in e.outputs
            ],
        }
    unavailable = {
        ep: (
            "not every layer has an inverse: "
            + ", ".join(
                sorted({type(la).__name__ for la in flow.flow_layers if not la.has_inverse})
            )
            + "; use generate_and_log_prob"
        )
        for ep, e in ENDPOINTS.items()
        if ep not in frozen and e.needs_inverse
    }
    fmt_info: dict[str, dict[str, Any]] = {}
    if "saved_model" in formats:
        fmt_info["saved_model"] = {
            "path": SAVED_MODEL_DIR,
            "runtime": "TensorFlow (tf.saved_model.load) or TF Serving",
            "signatures": list(frozen),
            "serving_default": serving_default(frozen),
        }
    if "onnx" in formats:
        fmt_info["onnx"] = {
            "files": {ep: onnx_file(ep) for ep in frozen},
            "opset": ONNX_OPSET,
            "runtime": "onnxruntime",
        }
    if "tflite" in formats:
        fmt_info["tflite"] = {
            "path": TFLITE_FILE,
            "runtime": "ai_edge_litert (LiteRT), builtin ops only",
            "signatures": list(frozen),
        }
    rows = REFERENCE_ROWS
    reference = {
        "inputs": {k: v[:rows].tolist() for k, v in inputs.items()},
        "outputs": {
            ep: {k: v[:rows].tolist() for k, v in out.items()}
            for ep, out in expected.items()
            if ep != "sample"
        },
    }
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    return {
        "manifest_version": 1,
        "name": name,
        "flow": {
            "name": flow.name,
            "layers": [type(la).__name__ for la in flow.flow_layers],
            "event_shape": list(flow.data_event_shape),
            "context_dim": flow.context_dim,
            "dtype": "float32",
        },
        "endpoints": endpoints,
        "unavailable": unavailable,
        "formats": fmt_info,
        "opset": ONNX_OPSET if "onnx" in formats else None,
        "versions": _versions(),
        "files": files,
        "parity": {
            "tolerance": TOLERANCE,
            "measure": "max |artifact - keras| / s, s = |keras| where |keras| > 100 else 1",
            "rounding_factor": ROUNDING_FACTOR,
            "rounding_rule": (
                "an output beyond the tolerance passes within rounding_factor x the Keras "
                "model's own float32 spread (eager vs XLA on the same inputs); such a batch "
                "records the tolerance it was held to"
            ),
            "batches": list(PARITY_BATCHES),
            "results": {
                fmt: {
                    ep: {b: {k: v for k, v in r.items() if k != "passed"} for b, r in res.items()}
                    for ep, res in eps.items()
                }
                for fmt, eps in parity.items()
            },
        },
        "reference": reference,
    }
