"""The ``nfzoo`` command.

    nfzoo list [PATTERN] [--architecture A] [--kind K]   pretrained entries and their metrics
    nfzoo info NAME                              an entry's (or a folder's) card
    nfzoo verify [NAME ...]                      recompute entries' metrics from their weights
    nfzoo sample NAME -n N -o out.npy|out.csv    draw samples (flows and flow-VAEs)
    nfzoo logprob NAME --input x.npy|x.csv       log-density of each row
    nfzoo train ARCH --data moons|x.npy|x.csv --out DIR   train and save_pretrained
    nfzoo plot NAME -o out.png                   density and samples (2-D), sample grid (64-d)
    nfzoo export NAME --formats onnx tflite --out DIR   parity-checked deployable graphs

NAME is a pretrained entry (or a former name of one) or a folder written by
``save_pretrained`` / ``nfzoo train``, resolved as ``nfzoo.load`` resolves it (a bare name
that is both a folder here and an entry takes the folder, with a warning).
Bad input (a missing file, the wrong number of columns, NaN rows) is reported in one line
with a non-zero exit status; output files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from nfzoo.files import write_file_atomically

__all__ = ["main"]


class CLIError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


# ---- reading and writing arrays ------------------------------------------------------------


def read_array(path: str | os.PathLike, columns: int | None = None) -> np.ndarray:
    """Reads a 2-D float array from .npy (no pickle) or .csv (comma-separated, optional
    header row). Checks the column count and refuses rows with NaN or inf."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            x = _read_csv(path)
        else:
            raise CLIError(f"input must be a .npy or .csv file; received {path.name}")
    except ValueError as e:
        raise CLIError(f"could not read {path}: {e}") from None
    x = np.asarray(x)
    if x.ndim == 1 and columns == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise CLIError(f"{path} must hold a 2-D table (rows x columns); received shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise CLIError(f"{path} must hold numbers; received dtype {x.dtype}")
    if columns is not None and x.shape[1] != columns:
        raise CLIError(f"{path} has {x.shape[1]} columns; the flow expects {columns}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        rows = ", ".join(str(r + 1) for r in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise CLIError(f"{path} has {bad.size} row(s) with NaN or inf values (rows {rows})")
    return x.astype(np.float32)


def _read_csv(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError:
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)  # a header row


def write_array(path: str | os.PathLike, x: np.ndarray) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return write_file_atomically(path, lambda tmp: np.save(tmp, x))
    if suffix == ".csv":
        return write_file_atomically(
            path, lambda tmp: np.savetxt(tmp, x, delimiter=",", fmt="%.8g")
        )
    raise CLIError(f"output must end in .npy or .csv; received {path.name}")


# ---- commands -----------------------------------------------------------------------------


def _resolve(name: str):
    """What ``name`` names (a PretrainedEntry or a folder's path); an ambiguity warning is
    printed as one line on stderr."""
    import warnings

    from nfzoo.pretrained import resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = resolve(name)
        except ValueError as e:
            raise CLIError(str(e)) from None
    for warning in caught:
        print(f"nfzoo: warning: {warning.message}", file=sys.stderr)
    return found


def _load(name: str, vae_too: bool = False):
    """The model called ``name``: a Flow, or also a FlowVAE where ``vae_too`` (the commands
    that only draw samples)."""
    import nfzoo
    from nfzoo.pretrained import PretrainedEntry

    found = _resolve(name)
    try:
        model = found.load() if isinstance(found, PretrainedEntry) else nfzoo.load(found)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not isinstance(model, nfzoo.Flow) and not (vae_too and isinstance(model, nfzoo.vae.FlowVAE)):
        raise CLIError(
            f"{name} is a {type(model).__name__}, not a flow: this command scores and exports "
            "flows (a FlowVAE samples with nfzoo sample and nfzoo plot; in Python, nfzoo.load)"
        )
    return model


def cmd_list(args) -> None:
    import nfzoo

    try:
        entries = nfzoo.list_pretrained(
            args.pattern, architecture=args.architecture, kind=args.kind
        )
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not entries:
        print("no pretrained entries match")
        return
    width = max(len(e.name) for e in entries)
    print(
        f"{'name':{width}s} {'kind':10s} {'architecture':21s} {'data/target':16s} "
        f"{'metric (nats)':>22s} {'size':>8s}  former names"
    )
    for e in entries:
        label, value = e.headline
        data = e.dataset.get("name") or e.dataset.get("target", "")
        print(
            f"{e.name:{width}s} {e.kind:10s} {e.architecture:21s} {data:16s} "
            f"{label:>12s} {value:9.4f} {e.size_bytes / 1e6:7.2f}M  {', '.join(e.aliases)}"
        )


def cmd_info(args) -> None:
    import json

    from nfzoo.pretrained import CARD_FILE, CONFIG_FILE, PretrainedEntry

    found = _resolve(args.name)
    folder = found.path if isinstance(found, PretrainedEntry) else found
    if (folder / CARD_FILE).is_file():
        print((folder / CARD_FILE).read_text(), end="")
    elif (folder / CONFIG_FILE).is_file():  # a folder saved without a card: its facts
        config = json.loads((folder / CONFIG_FILE).read_text())
        facts = {k: v for k, v in config.items() if k not in ("flow", "flow_vae")}
        print(f"# {folder}\n\n{json.dumps(facts, indent=2)}")
    else:
        raise CLIError(f"{folder} has neither {CARD_FILE} nor {CONFIG_FILE}: not a saved model")


def cmd_verify(args) -> None:
    import nfzoo
    from nfzoo.pretrained import verify

    try:
        if args.names:
            names = [nfzoo.pretrained_entry(n).name for n in args.names]
        else:
            names = [e.name for e in nfzoo.list_pretrained()]
    except ValueError as e:
        raise CLIError(str(e)) from None
    print(f"{'entry':38s} {'metric':28s} {'card':>12s} {'recomputed':>12s}  agrees")
    failed = []
    for name in names:
        for check in verify(name):
            print(
                f"{name:38s} {check.metric.label:28s} {check.recorded:12.6f} "
                f"{check.recomputed:12.6f}  {'yes' if check.ok else 'NO'}",
                flush=True,
            )
            if not check.ok:
                failed.append(f"{name} ({check.metric.label})")
    if failed:
        raise CLIError(f"{len(failed)} figure(s) differ from their card: {', '.join(failed)}")
    print(f"all {len(names)} entries reproduce their cards")


def cmd_sample(args) -> None:
    if args.n < 1:
        raise CLIError(f"-n must be a positive number of samples; received {args.n}")
    model = _load(args.name, vae_too=True)
    x = model.sample(args.n, seed=args.seed).numpy()
    x = x.reshape(len(x), -1)
    print(f"wrote {write_array(args.output, x)} ({len(x)} samples)")


def cmd_logprob(args) -> None:
    flow = _load(args.name)
    x = read_array(args.input, columns=flow.event_size)
    if not flow.has_inverse:
        raise CLIError(f"{args.name} has no inverse, so it cannot score external points")
    x = x.reshape((len(x), *flow.data_event_shape))
    log_prob = np.concatenate(
        [flow.log_prob(c).numpy() for c in np.array_split(x, max(1, len(x) // 4096))]
    )
    if args.output:
        write_array(args.output, log_prob[:, None])
        print(f"wrote {args.output}")
    else:
        np.savetxt(sys.stdout, log_prob, fmt="%.6f")
    print(f"mean log-density {log_prob.mean():.4f} nats over {len(x)} rows", file=sys.stderr)


def cmd_train(args) -> None:
    import nfzoo
    from nfzoo.training import train_flow

    vector_archs = nfzoo.list_architectures(event_rank=1)
    if args.arch not in vector_archs:
        raise CLIError(
            f"nfzoo train fits vector data [n, D]; architecture {args.arch!r} is not one of "
            f"{', '.join(vector_archs)} (image flows: nfzoo.build and Flow.fit in Python)"
        )
    if args.data in nfzoo.data.TOY_DATASETS:
        x = nfzoo.data.make_toy(args.data, args.num_points, seed=args.seed)
    else:
        x = read_array(args.data)
        x = x[np.random.RandomState(args.seed).permutation(len(x))]
    n_val = int(len(x) * args.val_fraction)
    if len(x) - n_val < 2:
        raise CLIError(f"{args.data} has too few rows to train on ({len(x)})")
    train, val = x[n_val:], x[:n_val]
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    result = train_flow(
        lambda: nfzoo.build(args.arch, x.shape[1], seed=args.seed),
        train,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        strategy=args.strategy,
    )
    flow = result.flow
    metrics = {"train_loss": result.final_loss}
    if n_val and flow.has_inverse:
        metrics["val_nll_nats"] = float(-np.mean(flow.log_prob(val)))
    if not _is_chief():
        return  # under multi-worker training, one worker writes the result
    flow.save_pretrained(
        out,
        overwrite=args.overwrite,
        metadata={
            "architecture": {"name": args.arch, "event_dim": int(x.shape[1])},
            "dataset": {"source": str(args.data), "rows": len(x), "validation_rows": n_val},
            "training": {
                "steps": result.steps,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "seed": args.seed,
                "strategy": args.strategy,
                "replicas": result.replicas,
                "wall_time_seconds": round(result.seconds, 1),
            },
            "metrics": metrics,
            "command": "nfzoo " + " ".join(sys.argv[1:]),
        },
    )
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(
        f"saved {out} ({result.steps} steps on {result.replicas} replica(s), "
        f"{result.seconds:.1f} s; {summary})"
    )


def _is_chief() -> bool:
    import json

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("index", 0) == 0


def cmd_plot(args) -> None:
    model = _load(args.name, vae_too=True)
    from nfzoo import plots

    is_2d = getattr(model, "event_size", None) == 2
    draw = plots.density_figure if is_2d else plots.sample_grid
    print(f"wrote {draw(model, args.output, seed=args.seed)}")


# ---- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from nfzoo.training import STRATEGIES

    parser = argparse.ArgumentParser(prog="nfzoo", description="Normalizing flows: the zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="pretrained entries and their metrics")
    p.add_argument("pattern", nargs="?", help="glob pattern on names, e.g. 'maf-*' or '*-u1'")
    p.add_argument("--architecture", help="only this architecture (e.g. glow-1d)")
    p.add_argument("--kind", help="only this kind (density, reverse-kl, flow-vae)")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("info", help="show the card of an entry or a save_pretrained folder")
    p.add_argument("name", help="pretrained entry or save_pretrained folder")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("verify", help="recompute entries' metrics from their shipped weights")
    p.add_argument("names", nargs="*", help="entries (default: every entry)")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("sample", help="draw samples (a flow's or a flow-VAE's) into .npy or .csv")
    p.add_argument("name", help="pretrained entry or save_pretrained folder")
    p.add_argument("-n", type=int, default=1000, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="out.npy or out.csv")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("logprob", help="log-density of each row of a .npy or .csv file")
    p.add_argument("name")
    p.add_argument("--input", required=True)
    p.add_argument("-o", "--output", help="write the log-densities here (default: stdout)")
    p.set_defaults(fn=cmd_logprob)

    p = sub.add_parser("train", help="train an architecture and save it with save_pretrained")
    p.add_argument("arch", help="an architecture (nfzoo.list_architectures())")
    p.add_argument("--data", required=True, help="a toy density name, or a .npy / .csv file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=1000, help="training steps (multiple of 100)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-points", type=int, default=20000, help="points drawn from a toy set")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--strategy", choices=STRATEGIES, default="none")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("plot", help="density heat map with samples (2-D) or a sample grid")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, help="out.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_plot)

    from nfzoo.exporting import cli as export_cli

    p = sub.add_parser("export", help="SavedModel / ONNX / TFLite, parity-checked in each runtime")
    export_cli.build_parser(p)
    p.set_defaults(fn=export_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except CLIError as e:
        print(f"nfzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, NotImplementedError) as e:
        print(f"nfzoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
