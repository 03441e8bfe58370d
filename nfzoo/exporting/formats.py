"""Writers and runners of the three formats, all from the frozen endpoint graphs.

* SavedModel: one signature per endpoint (``serving_default`` is ``log_prob`` when the flow has
  an inverse, else ``generate_and_log_prob``), each a function importing the frozen graph:
  constants only, no variables, so TF Serving and ``tf.saved_model.load`` need no nfzoo.
  Its inputs are declared of any shape; the graph itself checks them (``graphs.rows``).
* TFLite: converted from that SavedModel, one signature runner per endpoint, TFLite builtin
  ops only (an endpoint that would need Flex / SELECT_TF_OPS fails the export).
* ONNX: one file per endpoint (ONNX graphs have a single entry point and onnxruntime wants
  every graph input fed), ``model.<endpoint>.onnx``, opset 17, converted from the frozen
  GraphDef with ``tf2onnx.convert.from_graph_def``; inputs and outputs carry the endpoint's
  names.

The runners execute an artifact in its own runtime and return ``{output name: array}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nfzoo.exporting.graphs import FrozenEndpoint

ONNX_OPSET = 17
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"


def onnx_file(endpoint: str) -> str:
    return f"model.{endpoint}.onnx"


def serving_default(endpoints) -> str:
    """The endpoint behind the SavedModel's ``serving_default`` signature."""
    return "log_prob" if "log_prob" in endpoints else "generate_and_log_prob"


def write_saved_model(frozen: dict[str, FrozenEndpoint], path: Path, relaxed: bool = False) -> None:
    """One signature per endpoint. ``relaxed``: inputs declared of any shape, so that the
    graph's own input checks refuse wrong inputs (the shipped SavedModel); the TFLite
    converter gets the declared shapes (``relaxed=False``)."""
    module = tf.Module()
    signatures = {name: fe.as_function(relaxed) for name, fe in frozen.items()}
    signatures["serving_default"] = signatures[serving_default(frozen)]
    tf.saved_model.save(module, str(path), signatures=signatures)


def write_tflite(saved_model: Path, endpoints, path: Path) -> None:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=list(endpoints)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        path.write_bytes(converter.convert())
    except Exception as e:  # the converter raises several error types
        raise ValueError(
            f"TFLite conversion with builtin ops only failed for endpoints {list(endpoints)}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from e


def _log1p_as_log(ctx, node, name, args):
    """tf2onnx 1.17 has no converter for Log1p (ONNX has no such op): log(1 + x). In float32
    this differs from log1p by at most ~1.2e-7 absolute, far inside the parity tolerance."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1.0, dtype))
    add = ctx.make_node("Add", [node.input[0], one.output[0]], name=utils.make_name(f"{name}_add"))
    ctx.replace_input(node, node.input[0], add.output[0], 0)
    node.type = "Log"
    return node


def write_onnx(fe: FrozenEndpoint, path: Path) -> None:
    import onnx
    import tf2onnx

    inputs = list(fe.input_tensors.values())
    outputs = list(fe.output_tensors.values())
    rename = {t: k for k, t in fe.input_tensors.items()}
    rename.update({t: k for k, t in fe.output_tensors.items()})
    model, _ = tf2onnx.convert.from_graph_def(
        fe.graph_def,
        input_names=inputs,
        output_names=outputs,
        opset=ONNX_OPSET,
        tensors_to_rename=rename,
        custom_op_handlers={"Log1p": (_log1p_as_log, [])},
    )
    _unseed_random_ops(model)
    unsupported = sorted(
        {n.op_type for n in _all_nodes(model.graph) if not onnx.defs.has(n.op_type, n.domain)}
    )
    if unsupported:
        raise ValueError(
            f"ONNX conversion of endpoint {fe.endpoint.name!r} left ops that are not standard "
            f"ONNX (opset {ONNX_OPSET}): {unsupported}."
        )
    path.write_bytes(model.SerializeToString())


def _unseed_random_ops(model) -> None:
    """Removes the ``seed`` attribute tf2onnx writes on random ops (``seed=0`` for an unseeded
    TensorFlow op): with it, onnxruntime draws the same numbers in every new session; without
    it, onnxruntime seeds each session itself, as the endpoint's "unseeded" promises.
    Reproducible draws come from ``generate`` on noise of one's own."""
    for node in _all_nodes(model.graph):
        if node.op_type.startswith("Random"):
            kept = [a for a in node.attribute if a.name != "seed"]
            del node.attribute[:]
            node.attribute.extend(kept)


def _all_nodes(graph):
    """Nodes of an ONNX graph and of its subgraphs (Loop and If bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                yield from _all_nodes(g)


# ---- runners -----------------------------------------------------------------------------


class SavedModelRunner:
    def __init__(self, path: Path):
        self.loaded = tf.saved_model.load(str(path))

    def __call__(self, endpoint: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fn = self.loaded.signatures[endpoint]
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}


class OnnxRunner:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.sessions: dict[str, Any] = {}

    def __call__(self, endpoint: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if endpoint not in self.sessions:
            self.sessions[endpoint] = ort.InferenceSession(
                str(self.directory / onnx_file(endpoint)), providers=["CPUExecutionProvider"]
            )
        session = self.sessions[endpoint]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))


class TFLiteRunner:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))

    def __call__(self, endpoint: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self.interpreter.get_signature_runner(endpoint)
        return {k: np.array(v) for k, v in runner(**inputs).items()}
