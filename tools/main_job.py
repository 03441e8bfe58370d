"""The main job: load a pretrained flow, check its held-out NLL against its card, sample,
score, plot and export it (ONNX and TFLite, parity-checked); the same for a pretrained image
flow (bits/dim against its card, a grid of samples at two temperatures, export); then train a
flow on two moons, save it to .keras, reload it and check the reloaded flow gives the same
log-densities.

    make main            # or: .venv/bin/python tools/main_job.py [--entry maf-moons]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nfzoo.console import import_tensorflow, native_stderr_silenced

import_tensorflow()  # before Keras: TensorFlow's start-up lines would bury the report

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nfzoo  # noqa: E402
from nfzoo import plots  # noqa: E402
from nfzoo.files import write_file_atomically  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pretrained_part(name: str, out: Path) -> bool:
    entry = nfzoo.pretrained_entry(name)
    flow = nfzoo.load(name)  # sha256-checked
    _, _, test = nfzoo.data.load_dataset(entry.preset.dataset)
    nll = float(-np.mean(flow.log_prob(test)))
    card = entry.metrics["test_nll_nats"]
    print(f"[1] nfzoo.load({name!r}): {entry.summary}")
    print(f"    held-out NLL {nll:.4f} nats on {len(test)} test points; card says {card:.4f}")
    samples = flow.sample(5, seed=0)
    print("    5 samples and their log-densities:")
    for x, lp in zip(samples.numpy(), flow.log_prob(samples).numpy()):
        print(f"      {np.array2string(x, precision=3):24s} log q = {lp:.3f}")
    png = out / f"{name}.png"
    plots.density_figure(flow, png)
    print(f"    density plot: {_rel(png)}")
    export_dir = out / "export" / name
    manifest = _export(flow, export_dir)
    worst = _worst_parity(manifest)
    print(f"    exported {', '.join(sorted(worst))} to {_rel(export_dir)}; parity checked in each")
    for fmt, err in sorted(worst.items()):
        print(f"      {fmt}: max |artifact - Keras| = {err:.1e} over batch 1 and 1000")
    return abs(nll - card) < 1e-4


def image_part(name: str, out: Path) -> bool:
    entry = nfzoo.pretrained_entry(name)
    preset = entry.preset  # the declared data set and evaluation protocol
    flow = nfzoo.load(name)
    _, _, test = nfzoo.data.load_dataset(preset.dataset)
    ev = preset.evaluation
    bpd = nfzoo.data.bits_per_dim(
        flow, test, nfzoo.data.DIGITS_LEVELS, draws=ev["dequantization_draws"], seed=ev["seed"]
    )
    card = entry.metrics["test_bits_per_dim"]
    print(f"[2] nfzoo.load({name!r}): {entry.summary}")
    print(
        f"    test bits/dim {bpd:.4f} on {len(test)} digit images; card says {card:.4f} "
        f"(a uniform model: {np.log2(nfzoo.data.DIGITS_LEVELS):.4f})"
    )
    for temperature in (1.0, 0.7):
        png = out / f"{name}-T{temperature:g}.png"
        plots.sample_grid(flow, png, seed=0, temperature=temperature)
        print(f"    64 samples at temperature {temperature:g}: {_rel(png)}")
    export_dir = out / "export" / name
    manifest = _export(flow, export_dir)
    for fmt, err in sorted(_worst_parity(manifest).items()):
        print(f"    exported {fmt}: max |artifact - Keras| = {err:.1e} over batch 1 and 1000")
    return abs(bpd - card) < 1e-4


def training_part(arch: str, epochs: int, out: Path) -> bool:
    train, val, test = nfzoo.data.split(nfzoo.data.make_moons(3000, seed=0))
    keras.utils.set_random_seed(0)  # fit's shuffling: the same figures on every run
    flow = nfzoo.build(arch, 2, seed=0)
    flow.compile(learning_rate=2e-3)  # Adam, jit_compile=True
    print(f"[3] training {arch} on two moons ({len(train)} points, {epochs} epochs)")
    start = time.perf_counter()
    flow.fit(train, batch_size=256, epochs=epochs, validation_data=(val,), verbose=0)
    seconds = time.perf_counter() - start
    nll = float(flow.evaluate(test, batch_size=300, verbose=0))
    gaussian = nfzoo.data.gaussian_baseline_nll(train, test)
    print(f"    held-out NLL {nll:.4f} nats (best single Gaussian {gaussian:.4f}), {seconds:.1f} s")
    path = out / f"{arch}-moons.keras"
    write_file_atomically(path, flow.save)
    reloaded = keras.saving.load_model(path)
    diff = float(np.max(np.abs(reloaded.log_prob(test) - flow.log_prob(test))))
    print(f"    saved {_rel(path)}; reloaded log_prob max |difference| = {diff:.1e}")
    return diff == 0.0


def _export(flow, export_dir: Path) -> dict:
    """ONNX and TFLite, replacing the previous run's export (LiteRT's notice on stderr
    silenced)."""
    with native_stderr_silenced():
        return nfzoo.export(flow, export_dir, formats=("onnx", "tflite"), overwrite=True)


def _worst_parity(manifest: dict) -> dict[str, float]:
    """Largest deterministic-endpoint parity error per format, from the export manifest."""
    worst = {}
    for fmt, endpoints in manifest["parity"]["results"].items():
        errors = [
            r["max_error"]
            for ep, runs in endpoints.items()
            if ep != "sample"
            for r in runs.values()
        ]
        worst[fmt] = max(errors)
    return worst


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="maf-moons", help="a pretrained entry")
    parser.add_argument("--image-entry", default="glow-digits", help="a pretrained image flow")
    parser.add_argument("--arch", default="realnvp", choices=nfzoo.list_architectures(event_rank=1))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "main_job")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ok = pretrained_part(args.entry, args.out)
    ok = image_part(args.image_entry, args.out) and ok
    ok = training_part(args.arch, args.epochs, args.out) and ok
    print("main job: OK" if ok else "main job: FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
