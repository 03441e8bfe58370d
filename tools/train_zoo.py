"""Trains a pretrained entry from its recipe and writes it into pretrained/<name>/ with its
card, then records it in pretrained/index.json (the registry).

    .venv/bin/python tools/train_zoo.py NAME [NAME ...]    # or: --all, --list

Three kinds of recipe (nfzoo.pretrained.HEADLINES): "density" (a flow fitted to data by
maximum likelihood), "reverse-kl" (a planar or Sylvester flow fitted to U1-U4 by reverse KL,
with tools/vi_targets.py's protocol) and "flow-vae" (a FlowVAE on binarised digits, with
tools/vae_table.py's budget). Every entry is trained with a fixed seed on a 2-core CPU
machine; the card reports metrics measured right after training, which
tests/test_pretrained.py recomputes from the shipped weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import vae_table
import vi_targets

import nfzoo
from nfzoo.files import sha256_file, write_file_atomically
from nfzoo.pretrained import (
    CONFIG_FILE,
    INDEX_FILE,
    WEIGHTS_FILE,
    pretrained_dir,
    save_pretrained,
)
from nfzoo.registry import Registry
from nfzoo.training import train_flow

TOY_SPLIT = {"n_train": 20000, "n_val": 2000, "n_test": 10000, "seed": 0}


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    architecture: str
    dataset: dict
    options: dict = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 1e-3
    patience: int | None = None
    seed: int = 0
    kind = "density"


@dataclass(frozen=True)
class ReverseKLRecipe:
    """``architecture`` fitted to ``target`` by reverse KL (tools/vi_targets.py's protocol)."""

    name: str
    summary: str
    architecture: str
    target: str
    steps: int = 4000
    kind = "reverse-kl"


@dataclass(frozen=True)
class FlowVAERecipe:
    """A FlowVAE with ``posterior`` at tools/vae_table.py's default budget and ``seed``."""

    name: str
    summary: str
    posterior: str
    seed: int = 0
    kind = "flow-vae"


RECIPES: Registry[Recipe | ReverseKLRecipe | FlowVAERecipe] = Registry("recipe")


def _recipe(**kwargs):
    RECIPES.add(kwargs["name"], Recipe(**kwargs))


_WIDE = {"hidden_units": [128, 128]}
for _arch in ("maf", "realnvp", "nice", "iaf", "glow-1d"):
    _recipe(
        name=f"{_arch.replace('-', '')}-moons",
        summary=f"{_arch} on two moons (one entry per architecture, to compare)",
        architecture=_arch,
        dataset={"name": "moons", **TOY_SPLIT},
        options=_WIDE,
    )
#: The best architecture per 2-D set: MAF (8 x [128, 128]), RealNVP (8 layers x [128, 128])
#: and Glow-1d (8 steps x [128, 128]) were each trained with the budget below (4000 steps,
#: seed 0) and compared by validation NLL (nats):
#:   set           maf     realnvp  glow-1d
#:   circles       3.202   3.209    3.318
#:   8gaussians    1.879   1.843    1.934
#:   pinwheel      2.467   2.511    2.459
#:   checkerboard  3.848   3.831    NaN (diverged at step 1973, before Flow.compile clipped
#:                                  gradients by default; tests/test_gradient_spike.py; not rerun)
#:   2spirals      3.072   2.818    2.961
BEST_2D = {
    "circles": "maf",
    "8gaussians": "realnvp",
    "pinwheel": "glow-1d",
    "checkerboard": "realnvp",
    "2spirals": "realnvp",
}
_OPTIONS_2D = {
    "maf": {"num_layers": 8, "hidden_units": [128, 128]},
    "realnvp": {"num_layers": 8, "hidden_units": [128, 128]},
    "glow-1d": {"num_steps": 8, "hidden_units": [128, 128]},
}
for _set, _arch in BEST_2D.items():
    _recipe(
        name=f"{_arch.replace('-', '')}-{_set}",
        summary=f"{_arch} on the 2-D {_set} density (the best of three by validation NLL)",
        architecture=_arch,
        dataset={"name": _set, **TOY_SPLIT},
        options=_OPTIONS_2D[_arch],
        steps=4000,
    )
_recipe(
    name="maf-digits",
    summary="MAF on sklearn's 8x8 digits as 64-d dequantised vectors (tabular)",
    architecture="maf",
    dataset={"name": "digits", "seed": 0},
    # chosen on the validation split among MAF 5x[256, 256] / 8x[128, 128] / 10x[64, 64]
    # at lr 1e-3 and 5x[128, 128] at lr 3e-4 (this one); with 1000 examples, larger models
    # overfit within a few hundred steps
    options={"num_layers": 5, "hidden_units": [128, 128]},
    steps=5000,
    batch_size=100,
    learning_rate=3e-4,
    patience=5,
)


#: digits as [8, 8, 1] images of 17-level counts: the metric is test bits/dim, averaged over
#: ``eval_draws`` fixed dequantizations from ``eval_seed`` (nfzoo.data.bits_per_dim)
DIGITS_IMAGES = {"name": "digits-images", "seed": 0, "eval_draws": 4, "eval_seed": 100}
#: Glow and multi-scale RealNVP at the sizes of tools/image_ablation.py; validation bits/dim
#: every 100 steps keeps the best weights (with 1000 training images they overfit)
_IMAGE_COMMON = {"hidden_channels": 64, "num_levels": 17}
_recipe(
    name="glow-digits",
    summary="Glow (2 levels x 8 steps, LU 1x1 convs, affine couplings) on 8x8 digit images",
    architecture="glow",
    dataset=DIGITS_IMAGES,
    options={"levels": 2, "steps_per_level": 8, "permutation": "lu", **_IMAGE_COMMON},
    steps=3000,
    batch_size=64,
    learning_rate=1e-3,
    patience=5,
)
_recipe(
    name="realnvp-digits",
    summary="Multi-scale RealNVP (checkerboard and channel couplings) on 8x8 digit images",
    architecture="realnvp-image",
    dataset=DIGITS_IMAGES,
    options={"levels": 2, **_IMAGE_COMMON},
    steps=3000,
    batch_size=64,
    learning_rate=1e-3,
    patience=5,
)


#: reverse KL to Rezende & Mohamed's energies (figure 3): planar K = 32 and the Sylvesters
VI_ARCHITECTURES = (
    "planar",
    "sylvester-orthogonal",
    "sylvester-householder",
    "sylvester-triangular",
)
for _target in ("u1", "u2", "u3", "u4"):
    for _arch in VI_ARCHITECTURES:
        RECIPES.add(
            f"{_arch}-{_target}",
            ReverseKLRecipe(
                name=f"{_arch}-{_target}",
                summary=f"{_arch} fitted by reverse KL to the energy {_target.upper()} "
                "(Rezende & Mohamed 2015, figure 3)",
                architecture=_arch,
                target=_target,
            ),
        )
#: flow-VAEs on binarised digits, one per posterior, at the vae_table budget (seed 0)
for _posterior in nfzoo.vae.POSTERIORS:
    RECIPES.add(
        f"vae-digits-{_posterior}",
        FlowVAERecipe(
            name=f"vae-digits-{_posterior}",
            summary=f"Flow-VAE on binarised 8x8 digits, posterior {_posterior!r}",
            posterior=_posterior,
        ),
    )


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}"


def _is_images(dataset: dict) -> bool:
    return dataset["name"] == "digits-images"


def image_bits_per_dim(flow, counts, dataset: dict, seed_offset: int = 0) -> float:
    """The image entries' metric: bits/dim over the dataset's fixed dequantizations."""
    return nfzoo.data.bits_per_dim(
        flow,
        counts,
        nfzoo.data.DIGITS_LEVELS,
        draws=dataset["eval_draws"],
        seed=dataset["eval_seed"] + seed_offset,
    )


def _nll(flow, x) -> float:
    return float(
        -np.mean(np.concatenate([flow.log_prob(c).numpy() for c in np.array_split(x, 10)]))
    )


def train_entry(recipe) -> dict:
    """Trains ``recipe``, writes pretrained/<name>/ and returns its metadata."""
    if recipe.kind == "reverse-kl":
        return train_reverse_kl_entry(recipe)
    if recipe.kind == "flow-vae":
        return train_flow_vae_entry(recipe)
    return train_density_entry(recipe)


def train_density_entry(recipe: Recipe) -> dict:
    train, val, test = nfzoo.data.load_dataset(recipe.dataset)
    event_shape = train.shape[1:]
    event_dim = int(np.prod(event_shape))
    images = _is_images(recipe.dataset)
    result = train_flow(
        lambda: nfzoo.build(
            recipe.architecture,
            event_shape,
            seed=recipe.seed,
            name=recipe.name.replace("-", "_"),
            **recipe.options,
        ),
        train,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        seed=recipe.seed,
        validation=val if recipe.patience else None,
        patience=recipe.patience,
        dequantize=images,
        verbose=2,
    )
    flow = result.flow
    if images:
        # bits/dim of the 17-level counts; NLL in nats per image of the dequantized data
        flat = {
            k: nfzoo.data.dequantize(v, seed=1).reshape(len(v), -1)
            for k, v in (("train", train), ("test", test))
        }
        test_bpd = image_bits_per_dim(flow, test, recipe.dataset)
        val_bpd = image_bits_per_dim(flow, val, recipe.dataset, seed_offset=1000)
        metrics = {
            "test_bits_per_dim": test_bpd,
            "val_bits_per_dim": val_bpd,
            "test_nll_nats": test_bpd * event_dim * np.log(2.0),
            "val_nll_nats": val_bpd * event_dim * np.log(2.0),
            "gaussian_test_nll_nats": nfzoo.data.gaussian_baseline_nll(flat["train"], flat["test"]),
            "uniform_bits_per_dim": float(np.log2(nfzoo.data.DIGITS_LEVELS)),
        }
    else:
        metrics = _vector_metrics(flow, recipe, train, val, test, event_dim)
    command = f"python tools/train_zoo.py {recipe.name}"
    return _finish(recipe, flow, result, metrics, command, event_shape, train, val, test)


def _vector_metrics(flow, recipe, train, val, test, event_dim) -> dict:
    metrics = {
        "test_nll_nats": _nll(flow, test),
        "val_nll_nats": _nll(flow, val),
        "gaussian_test_nll_nats": nfzoo.data.gaussian_baseline_nll(train, test),
    }
    if recipe.dataset["name"] == "digits":
        # discrete 17-level pixels: bits/dim upper bound (uniform dequantisation)
        metrics["test_bits_per_dim"] = (metrics["test_nll_nats"] + event_dim * np.log(17.0)) / (
            event_dim * np.log(2.0)
        )
    return metrics


def _finish(recipe, flow, result, metrics, command, event_shape, train, val, test) -> dict:
    metadata = {
        "name": recipe.name,
        "summary": recipe.summary,
        "kind": recipe.kind,
        "architecture": {
            "name": recipe.architecture,
            "event_shape": [int(d) for d in event_shape],
            "options": recipe.options,
        },
        "dataset": {
            **recipe.dataset,
            "sizes": {"train": len(train), "validation": len(val), "test": len(test)},
        },
        "training": {
            "steps": result.steps,
            "batch_size": recipe.batch_size,
            "learning_rate": recipe.learning_rate,
            "optimizer": "adam",
            "seed": recipe.seed,
            "early_stopping_patience": recipe.patience,
            "wall_time_seconds": round(result.seconds, 1),
            "machine": _machine(),
        },
        "metrics": metrics,
        "command": command,
    }
    return _save_entry(recipe, flow, metadata, _card_facts(recipe, metadata))


def train_reverse_kl_entry(recipe: ReverseKLRecipe) -> dict:
    target = nfzoo.targets.get(recipe.target)
    log_z_ref = nfzoo.targets.reference_log_z(target)
    flow = vi_targets.build_flow(recipe.architecture, name=recipe.name.replace("-", "_"))
    before = vi_targets.measure(flow, target)
    after, seconds = vi_targets.fit(flow, target, recipe.steps)
    metrics = {
        "kl_nats": log_z_ref - after.elbo,
        "elbo": after.elbo,
        "elbo_se": after.elbo_se,
        "log_z_is": after.log_z,
        "log_z_is_se": after.log_z_se,
        "log_z_error": after.log_z - log_z_ref,
        "ess_fraction": after.ess,
        "log_z_reference": log_z_ref,
        "initial_kl_nats": log_z_ref - before.elbo,
    }
    metadata = {
        "name": recipe.name,
        "summary": recipe.summary,
        "kind": recipe.kind,
        "architecture": {
            "name": recipe.architecture,
            "event_shape": [2],
            "options": vi_targets.ARCH_OPTIONS.get(recipe.architecture, {}),
        },
        "dataset": {"target": recipe.target},
        "target": {
            "name": recipe.target,
            "log_z_reference": log_z_ref,
            "log_z_reference_method": "exact"
            if target.log_z is not None
            else "nfzoo.targets.quadrature_log_z (2001 x 2001 grid over [-6, 6]^2)",
        },
        "training": {
            "objective": "reverse KL (minimise E_q[log q - log p~]), beta annealed from 0.01 "
            "to 1 over the first quarter",
            "steps": recipe.steps,
            "num_samples": vi_targets.NUM_SAMPLES,
            "learning_rate": vi_targets.LEARNING_RATE,
            "optimizer": "adam",
            "seed": vi_targets.SEED,
            "wall_time_seconds": round(seconds, 1),
            "machine": _machine(),
        },
        "evaluation": {"num_samples": vi_targets.EVAL_SAMPLES, "seed": vi_targets.EVAL_SEED},
        "metrics": metrics,
        "command": f"python tools/train_zoo.py {recipe.name}",
    }
    m, t = metrics, metadata["training"]
    facts = [
        f"- architecture: `{recipe.architecture}` with options "
        f"`{json.dumps(metadata['architecture']['options'])}`, 2-D",
        f"- target: `nfzoo.targets.get({recipe.target!r})`; reference log Z = "
        f"{log_z_ref:.6f} ({metadata['target']['log_z_reference_method']})",
        f"- KL(q || p) = log Z - ELBO: **{m['kl_nats']:.4f} nats** (+- {m['elbo_se']:.4f}; "
        f"{m['initial_kl_nats']:.4f} before training)",
        f"- ELBO {m['elbo']:.4f}; importance-sampled log Z {m['log_z_is']:.4f} +- "
        f"{m['log_z_is_se']:.4f} (error {m['log_z_error']:+.4f}); ESS fraction "
        f"{m['ess_fraction']:.3f}; from {vi_targets.EVAL_SAMPLES} samples, noise seed "
        f"{vi_targets.EVAL_SEED} (`nfzoo.vi.diagnostics`)",
        f"- training: {t['steps']} steps x {t['num_samples']} samples, Adam "
        f"{t['learning_rate']}, seed {t['seed']}, {t['wall_time_seconds']} s on {t['machine']}",
    ]
    return _save_entry(recipe, flow, metadata, facts)


def train_flow_vae_entry(recipe: FlowVAERecipe) -> dict:
    args = vae_table.make_parser().parse_args([])
    dataset = {"name": "binarized-digits", "seed": 0}
    train, val, test = nfzoo.data.load_dataset(dataset)
    model, _, seconds = vae_table.train_vae(
        recipe.posterior, train, recipe.seed, args, name=recipe.name.replace("-", "_")
    )
    figures = vae_table.measure(model, train, test, args.k)
    # the best model with independent pixels: Bernoulli(train mean), clipped away from 0 / 1
    p = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)
    bernoulli = -np.mean(test @ np.log(p) + (1 - test) @ np.log(1 - p))
    metrics = {
        "test_iw_nll_nats": figures["test_iw_nll"],
        "test_neg_elbo_nats": figures["test_neg_elbo"],
        "train_neg_elbo_nats": figures["train_neg_elbo"],
        "bernoulli_test_nll_nats": float(bernoulli),
    }
    options = {
        "posterior": recipe.posterior,
        "latent_dim": args.latent_dim,
        "hidden_units": args.hidden,
        "num_flows": args.num_flows,
    }
    metadata = {
        "name": recipe.name,
        "summary": recipe.summary,
        "kind": recipe.kind,
        "architecture": {"name": "flow-vae", "options": options},
        "dataset": {
            **dataset,
            "sizes": {"train": len(train), "validation": len(val), "test": len(test)},
        },
        "training": {
            "objective": "-ELBO, one reparameterised sample per example",
            "steps": int(model.optimizer.iterations.numpy()),
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "optimizer": "adam",
            "seed": recipe.seed,
            "wall_time_seconds": round(seconds, 1),
            "machine": _machine(),
        },
        "evaluation": {"elbo_samples": 100, "elbo_seed": 1, "iw_samples": args.k, "iw_seed": 2},
        "metrics": metrics,
        "command": f"python tools/train_zoo.py {recipe.name}",
    }
    m, t = metrics, metadata["training"]
    facts = [
        f"- model: `nfzoo.vae.FlowVAE` with `{json.dumps(options)}` (van den Berg et al. 2018, "
        "arXiv:1803.05649)",
        "- data: `nfzoo.data.binarized_digits()` (pixel >= 8 of 0..16); split "
        f"{len(train)} train / {len(val)} validation / {len(test)} test",
        f"- test importance-weighted NLL (-L_k, k = {args.k}, noise seed 2): "
        f"**{m['test_iw_nll_nats']:.4f} nats** per digit",
        f"- test -ELBO (100-sample estimate, noise seed 1): {m['test_neg_elbo_nats']:.4f} "
        f"nats (train {m['train_neg_elbo_nats']:.4f}); independent pixels (Bernoulli of "
        f"the training means): {m['bernoulli_test_nll_nats']:.4f}",
        f"- training: {t['steps']} steps of batch {t['batch_size']}, Adam "
        f"{t['learning_rate']}, seed {t['seed']}, {t['wall_time_seconds']} s on {t['machine']}",
    ]
    return _save_entry(recipe, model, metadata, facts, loads_as=" (a FlowVAE)")


def _save_entry(recipe, model, metadata: dict, facts: list[str], loads_as: str = "") -> dict:
    """Writes pretrained/<name>/ (save_pretrained) with its card: title, summary, ``facts``
    (Markdown bullets), the command that reproduces it and how to load it. Returns
    ``metadata``."""
    card = [
        f"# {recipe.name}",
        "",
        recipe.summary + ".",
        "",
        *facts,
        f"- reproduce: `{metadata['command']}`",
        "",
        f'Load with `nfzoo.load("{recipe.name}")`{loads_as}. The figures above are recomputed '
        "from the shipped weights by tests/test_pretrained.py.",
        "",
    ]
    folder = pretrained_dir() / recipe.name
    save_pretrained(model, folder, metadata=metadata, card="\n".join(card), overwrite=True)
    return metadata


def _card_facts(recipe: Recipe, meta: dict) -> list[str]:
    m, t, d = meta["metrics"], meta["training"], meta["dataset"]
    lines = [
        f"- architecture: `{recipe.architecture}` with options `{json.dumps(recipe.options)}`",
        f"- dataset: `{json.dumps({k: v for k, v in d.items() if k != 'sizes'})}`; split "
        f"{d['sizes']['train']} train / {d['sizes']['validation']} validation / "
        f"{d['sizes']['test']} test",
        f"- held-out (test) NLL: **{m['test_nll_nats']:.4f} nats** "
        f"(validation {m['val_nll_nats']:.4f}; "
        f"best single Gaussian {m['gaussian_test_nll_nats']:.4f})",
    ]
    if "uniform_bits_per_dim" in m:
        lines.append(
            f"- test bits/dim (17-level pixels, mean over {d['eval_draws']} fixed uniform "
            f"dequantizations): **{m['test_bits_per_dim']:.4f}** (validation "
            f"{m['val_bits_per_dim']:.4f}; a uniform model: {m['uniform_bits_per_dim']:.4f})"
        )
    elif "test_bits_per_dim" in m:
        lines.append(
            f"- test bits/dim (17-level pixels, dequantised): {m['test_bits_per_dim']:.4f}"
        )
    lines.append(
        f"- training: {t['steps']} steps of batch {t['batch_size']}, Adam {t['learning_rate']}, "
        f"seed {t['seed']}, {t['wall_time_seconds']} s on {t['machine']}"
        + (f", early stopping (patience {t['early_stopping_patience']})" if recipe.patience else "")
    )
    return lines


def record(name: str, meta: dict) -> None:
    """Adds the entry to pretrained/index.json (rewritten atomically)."""
    folder = pretrained_dir() / name
    index_path = pretrained_dir() / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[name] = {
        "summary": meta["summary"],
        "kind": meta["kind"],
        "architecture": meta["architecture"]["name"],
        "dataset": {k: v for k, v in meta["dataset"].items() if k != "sizes"},
        "metrics": meta["metrics"],
        "config_sha256": sha256_file(folder / CONFIG_FILE),
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
        "size_bytes": sum(p.stat().st_size for p in folder.iterdir()),
    }
    text = json.dumps(dict(sorted(index.items())), indent=2) + "\n"
    write_file_atomically(index_path, lambda tmp: tmp.write_text(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--all", action="store_true", help="train every recipe")
    parser.add_argument("--list", action="store_true", help="list the recipes")
    args = parser.parse_args()
    if args.list:
        for name in RECIPES.names():
            print(f"{name:20s} {RECIPES.get(name).summary}")
        return 0
    names = RECIPES.names() if args.all else args.names
    if not names:
        parser.error("name at least one recipe (see --list), or pass --all")
    try:
        recipes = [RECIPES.get(n) for n in names]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for recipe in recipes:
        meta = train_entry(recipe)
        record(recipe.name, meta)
        label, value = nfzoo.pretrained_entry(recipe.name).headline
        print(
            f"{recipe.name}: {label} {value:.4f} nats, "
            f"{meta['training']['steps']} steps, {meta['training']['wall_time_seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
