"""The export shelf: export/ holds one folder per architecture family of the exportable
entries, each named after the entry it was exported from; export/README.md names exactly the
folders that exist; tools/export_zoo.py says which entries it skips and why."""

import importlib.util
import json
import re
from pathlib import Path

import nfzoo
from nfzoo.kinds import KINDS

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "export"
#: the families the shelf must hold at least (multi-scale realnvp is realnvp-image)
FAMILIES = {
    "glow",
    "realnvp-image",
    "maf",
    "iaf",
    "nice",
    "realnvp",
    "glow-1d",
    "planar",
    "sylvester-orthogonal",
    "sylvester-householder",
    "sylvester-triangular",
}


def _export_zoo():
    spec = importlib.util.spec_from_file_location("export_zoo", ROOT / "tools" / "export_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folders() -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in EXPORT.glob("*/manifest.json")}


def test_one_folder_per_architecture_named_after_its_entry():
    folders = _folders()
    assert {p.name for p in EXPORT.iterdir() if p.is_dir()} == set(folders)
    architectures = {}
    for folder, manifest in folders.items():
        entry = nfzoo.pretrained_entry(manifest["source"]["pretrained"])
        assert entry.name == folder == manifest["name"]
        architectures.setdefault(entry.architecture, []).append(folder)
    exportable = {
        e.architecture for e in nfzoo.list_pretrained() if KINDS.get(e.kind).not_exportable is None
    }
    assert set(architectures) == exportable
    assert exportable >= FAMILIES
    assert all(len(names) == 1 for names in architectures.values()), architectures


def test_readme_names_only_folders_that_exist():
    text = (EXPORT / "README.md").read_text()
    named = set(re.findall(r"export/([a-z0-9][a-z0-9.-]*)/", text))
    named |= set(re.findall(r"\| `([a-z0-9][a-z0-9.-]*)/` \|", text))
    assert named == set(_folders())


def test_export_zoo_says_which_entries_it_skips_and_why():
    export_zoo = _export_zoo()
    chosen, skipped = export_zoo.plan()
    assert sorted(chosen) == sorted(_folders())
    assert set(chosen) | set(skipped) == {e.name for e in nfzoo.list_pretrained()}
    for entry in nfzoo.list_pretrained(kind="flow-vae"):
        assert "a FlowVAE is a VAE, not a Flow" in skipped[entry.name]
    assert "maf is on the shelf as maf-moons" in skipped["maf-circles"]
    # a named entry is exported even where another stands for its architecture
    assert export_zoo.plan(["maf-circles", "vae-digits-iaf"]) == (
        ["maf-circles"],
        {"flow-vae-iaf-digits": skipped["flow-vae-iaf-digits"]},
    )


def test_the_amortized_posterior_on_the_shelf_samples_like_the_keras_flow():
    """npe-two-moons stands for the npe entries on the shelf: for a task observation, its
    exported graphs in onnxruntime and LiteRT map fixed noise to the Keras flow's posterior
    draws (1e-4) and their in-graph sampling matches the Keras posterior's mean and spread."""
    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from nfzoo import npe
    from nfzoo.exporting import TOLERANCE

    chosen, skipped = _export_zoo().plan()
    assert (
        "npe-two-moons" in chosen
        and "npe is on the shelf as npe-two-moons" in (skipped["npe-gaussian-mixture"])
    )
    folder = EXPORT / "npe-two-moons"
    flow = nfzoo.load("npe-two-moons")
    x_obs = np.asarray(npe.get_task("two-moons").observation(1), np.float32)[None]
    n = 4000
    z = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    keras_x = np.asarray(flow.generate(z, context=np.repeat(x_obs, n, axis=0)))
    keras_sample = np.asarray(flow.sample(n, context=x_obs[0], seed=1))
    lite = Interpreter(model_path=str(folder / "model.tflite"))
    runs = {
        "onnxruntime": lambda ep, feed: dict(
            zip(
                ["x"],
                ort.InferenceSession(str(folder / f"model.{ep}.onnx")).run(["x"], feed),
            )
        ),
        "litert": lambda ep, feed: lite.get_signature_runner(ep)(**feed),
    }
    for runtime, run in runs.items():
        x = run("generate", {"z": z, "context": np.repeat(x_obs, n, axis=0)})["x"]
        assert np.max(np.abs(x - keras_x)) <= TOLERANCE, runtime
        drawn = run("sample", {"n": np.array(n, np.int32), "context": x_obs})["x"][:, 0]
        assert drawn.shape == (n, 2) and np.all(np.isfinite(drawn)), runtime
        se = np.sqrt(2 * keras_sample.var(axis=0) / n)
        assert np.all(np.abs(drawn.mean(axis=0) - keras_sample.mean(axis=0)) < 6 * se), runtime
        ratio = drawn.std(axis=0) / keras_sample.std(axis=0)
        assert np.all(np.abs(ratio - 1) < 0.1), (runtime, ratio)
