"""Flow-VAE on binarised digits: test -ELBO and importance-weighted NLL for every posterior at
one fixed training budget, as a Markdown table (and JSON under out/).

    .venv/bin/python tools/vae_table.py [--steps 3000] [--k 500] \
        [--posteriors none planar ...] [--latent-dim 8] [--num-flows 4] [--seeds 0 1 2]

Data: nfzoo.data.binarized_digits() (pixel >= 8 of 0..16; fixed split 1000 / 350 / 447).
The protocol is that of the registry's flow-VAE entries (``nfzoo.presets.flow_vae``, where
its values are declared once); the options change it. Every posterior: the same FlowVAE
(encoder 64 -> 128 -> 128, decoder mirrored, latent 8, 4 flow steps), the same seeds (initial
weights and shuffling), Adam 1e-3, batch 100, the same
number of steps, jit_compile=True, no KL warm-up, no early stopping. -ELBO is the mean over
examples of a 100-sample ELBO estimate; IW-NLL is -L_k with k = --k (Burda et al. 2015), both
in nats per example, on fixed evaluation noise. With several seeds the table shows means over
seeds +- their standard error, and each posterior's test IW-NLL minus that of "none" trained
with the same seed (paired), mean +- standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from nfzoo import data, presets, vae
from nfzoo.kinds.flow_vae import measure, train_flow_vae


def preset_of(posterior: str, seed: int, args) -> presets.Preset:
    """The registry's flow-VAE protocol (``nfzoo.presets.flow_vae``) with this command's
    budget and sizes."""
    return presets.flow_vae(
        posterior,
        latent_dim=args.latent_dim,
        hidden_units=args.hidden,
        num_flows=args.num_flows,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=seed,
        iw_samples=args.k,
    )


def run_one(name, train, test, args, seed) -> dict:
    preset = preset_of(name, seed, args)
    model, history, seconds = train_flow_vae(preset, train)
    figures = measure(model, test, preset)
    ev = preset.evaluation
    return {
        "posterior": name,
        "seed": seed,
        "steps": int(model.optimizer.iterations.numpy()),
        "test_neg_elbo": figures["test_neg_elbo_nats"],
        "test_iw_nll": figures["test_iw_nll_nats"],
        "train_neg_elbo": float(
            -model.elbo(train, num_samples=ev["elbo_samples"], seed=ev["elbo_seed"]).mean()
        ),
        "final_train_loss": float(history.history["loss"][-1]),
        "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "flow_parameters": int(sum(np.prod(w.shape) for w in model.flow.trainable_weights)),
        "fit_seconds": seconds,
    }


def _mean_se(values) -> str:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return f"{values.mean():.2f}"
    return f"{values.mean():.2f} +- {values.std(ddof=1) / np.sqrt(len(values)):.2f}"


def make_parser() -> argparse.ArgumentParser:
    """The command line; its defaults are the registry's protocol (``presets.flow_vae``)."""
    protocol = presets.flow_vae("none")
    t, ev, options = protocol.training, protocol.evaluation, protocol.options
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=t["steps"])
    parser.add_argument("--k", type=int, default=ev["iw_samples"])
    parser.add_argument("--posteriors", nargs="*", default=list(vae.POSTERIORS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[t["seed"]])
    parser.add_argument("--latent-dim", type=int, default=options["latent_dim"])
    parser.add_argument("--num-flows", type=int, default=options["num_flows"])
    parser.add_argument("--hidden", type=int, nargs="*", default=options["hidden_units"])
    parser.add_argument("--batch-size", type=int, default=t["batch_size"])
    parser.add_argument("--lr", type=float, default=t["learning_rate"])
    parser.add_argument("--out", default="out/vae_table.json")
    return parser


def main() -> None:
    args = make_parser().parse_args()

    train, _, test = data.binarized_digits()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for name in args.posteriors:
            row = run_one(name, train, test, args, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2))

    print(
        f"\n| posterior | test -ELBO (nats) | test IW-NLL (k={args.k}) | IW-NLL - none | "
        f"train -ELBO | parameters (flow) | fit seconds ({args.steps} steps) |"
    )
    print("|---|---|---|---|---|---|---|")
    base = {r["seed"]: r["test_iw_nll"] for r in rows if r["posterior"] == "none"}
    for name in args.posteriors:
        mine = [r for r in rows if r["posterior"] == name]
        diff = [r["test_iw_nll"] - base[r["seed"]] for r in mine if r["seed"] in base]
        print(
            f"| {name} | {_mean_se([r['test_neg_elbo'] for r in mine])} | "
            f"{_mean_se([r['test_iw_nll'] for r in mine])} | "
            f"{_mean_se(diff) if diff else '-'} | "
            f"{_mean_se([r['train_neg_elbo'] for r in mine])} | "
            f"{mine[0]['parameters']} ({mine[0]['flow_parameters']}) | "
            f"{np.mean([r['fit_seconds'] for r in mine]):.0f} |"
        )


if __name__ == "__main__":
    main()
