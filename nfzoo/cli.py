"""The ``nfzoo`` command.

    nfzoo list [PATTERN] [--architecture A] [--kind K]   pretrained entries and their metrics
    nfzoo info NAME                              an entry's (or a folder's) card
    nfzoo verify [NAME ...]                      recompute entries' metrics from their weights
    nfzoo sample NAME -n N -o out.npy|out.csv [--context C]   draw samples (flows, flow-VAEs)
    nfzoo logprob NAME --input x.npy|x.csv [--context C]      log-density of each row
    nfzoo train ARCH --data moons|x.npy|x.csv --out DIR [--option K=V ...]   train and save
    nfzoo plot NAME -o out.png|.jpg|.pdf|.svg    density and samples (2-D), sample grid (64-d)
    nfzoo export NAME --formats onnx tflite --out DIR   parity-checked deployable graphs

NAME is a pretrained entry (or a former name of one) or a folder written by
``save_pretrained`` / ``nfzoo train``, resolved as ``nfzoo.load`` resolves it (a bare name
that is both a folder here and an entry takes the folder, with a warning). A conditional flow
(``context_dim`` > 0) needs ``--context``: its values comma-separated, or a .npy / .csv file
of one row (for ``logprob`` also one row per input row); an unconditional one refuses it.

Every error is one line on stderr, ``nfzoo COMMAND: error: ...``, and the exit status says
what kind of error it was (``EXIT_STATUSES``):

    0    done
    1    the command ran and failed: training diverged, an export failed its parity check, a
         card's figure was not reproduced, out of memory, a file could not be written
    2    the command line or an input is wrong: an unknown option, name or value, an
         unreadable or invalid input file, an output that exists (without --overwrite) or
         that nfzoo will not replace
    3    an internal error, a bug in nfzoo (``NFZOO_VERBOSE=1`` shows its traceback)
    130  interrupted (Ctrl-C)

Whatever the status, nothing is half-written: outputs are written under a temporary name and
renamed into place at the end (``nfzoo.files``); an existing output is replaced only with
``--overwrite``, and a folder only when nfzoo wrote it. Samples and log-densities are
computed in batches and streamed to their file, so memory does not grow with ``-n`` or with
the input's length. ``list``, ``info`` and ``--help`` do not import TensorFlow; the other
commands import it without its start-up noise (``nfzoo.console``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["EXIT_STATUSES", "CLIError", "CommandError", "UsageError", "main"]

EXIT_STATUSES = {"done": 0, "failed": 1, "usage": 2, "internal": 3, "interrupted": 130}
#: the export formats (``nfzoo.exporting.FORMATS``; spelt here so that parsing the command
#: line needs no TensorFlow, and tests/test_cli.py checks the two agree)
EXPORT_FORMATS = ("saved_model", "onnx", "tflite")
#: the runtime each export format is checked in, and the package that provides it
EXPORT_RUNTIMES = {"onnx": ("onnxruntime", "tf2onnx", "onnx"), "tflite": ("ai_edge_litert",)}
#: values in one batch through a model (samples, log-densities): memory stays flat
BATCH_VALUES = 1 << 18
MAX_BATCH_ROWS = 16384
MAX_SEED = 2**32 - 1
#: a trained flow must fit held-out rows no worse than a diagonal Gaussian plus this margin
#: (per dimension) to be saved; GAUSSIAN_CHECK_ROWS training rows stand in without a split
GAUSSIAN_MARGIN_NATS = 1.0
GAUSSIAN_CHECK_ROWS = 10000
CONTEXT_HELP = (
    "a conditional flow's context: comma-separated values (--context=-0.1,0.2) or a .npy / "
    ".csv file"
)


class CLIError(Exception):
    """A wrong command line or input, which the user can fix; exit status 2."""


class UsageError(CLIError):
    """A command line argparse refused; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class CommandError(Exception):
    """The command ran and failed (training diverged, a check failed); exit status 1."""


# ---- the one error handler ----------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(message: object) -> str:
    """An exception's message as one line: ANSI codes removed, Keras's "Exception
    encountered when calling ..." wrapping and its argument list dropped, lines joined."""
    text = _ANSI.sub("", str(message))
    text = text.split("Arguments received by", 1)[0]
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("Exception encountered when calling")
    ]
    return " ".join(lines) or type(message).__name__


def _status(error: BaseException) -> tuple[int, str]:
    """The exit status of ``error`` and its one-line message."""
    from nfzoo.arrays import TableError
    from nfzoo.files import DestinationError

    if isinstance(error, KeyboardInterrupt):
        return EXIT_STATUSES["interrupted"], "interrupted; nothing was written"
    if isinstance(error, CLIError | TableError | DestinationError):
        return EXIT_STATUSES["usage"], one_line(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
        return EXIT_STATUSES["failed"], f"out of memory: {one_line(error)[:300]}"
    if isinstance(error, CommandError | ValueError | OSError | NotImplementedError):
        return EXIT_STATUSES["failed"], one_line(error)
    return (
        EXIT_STATUSES["internal"],
        f"internal error, please report it: {type(error).__name__}: {one_line(error)} "
        "(NFZOO_VERBOSE=1 shows the traceback)",
    )


class _Parser(argparse.ArgumentParser):
    """Usage errors go through the one error handler (one line, status 2) instead of
    argparse's usage block."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


def _show_warnings_as_lines() -> None:
    """nfzoo's own warnings as ``nfzoo: warning: ...`` lines; third-party ones silenced."""
    from nfzoo import console
    from nfzoo.files import StaleFolderWarning
    from nfzoo.pretrained import AmbiguousNameWarning

    if console.verbose_requested():
        return
    warnings.simplefilter("ignore")
    for category in (AmbiguousNameWarning, StaleFolderWarning):
        warnings.simplefilter("always", category)
    warnings.showwarning = lambda message, *_, **__: print(
        f"nfzoo: warning: {one_line(message)}", file=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from nfzoo import console

    prog = "nfzoo"
    argv = _attach_negative_values(list(sys.argv[1:] if argv is None else argv))
    with warnings.catch_warnings():
        try:
            args, extra = build_parser().parse_known_args(argv)  # --help exits here
            prog = f"nfzoo {args.command}"
            if extra:
                raise UsageError(
                    f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)", prog
                )
            _show_warnings_as_lines()
            if args.needs_tensorflow:
                console.import_tensorflow()
            args.fn(args)
        except SystemExit:  # --help
            raise
        except BaseException as error:
            if console.verbose_requested():
                import traceback

                traceback.print_exc()
            status, message = _status(error)
            print(f"{getattr(error, 'prog', prog)}: error: {message}", file=sys.stderr)
            return status
    return EXIT_STATUSES["done"]


# ---- values of options --------------------------------------------------------------------

#: a value that starts with '-' but is numbers ("-0.1,0.2"): argparse would take it for an
#: option (it only knows single negative numbers), so it is attached: --context=-0.1,0.2
_NEGATIVE_VALUES = re.compile(r"^-[0-9.][0-9eE.+-]*(,\s*[-+]?[0-9.][0-9eE.+-]*)+$")
_VALUE_OPTIONS = ("--context",)


def _attach_negative_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _VALUE_OPTIONS and _NEGATIVE_VALUES.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _integer(text: str, low: int, high: int | None = None) -> int:
    """An integer option in [low, high]; argparse prefixes the message with the option."""
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise argparse.ArgumentTypeError(f"must be {bound}; received {text!r}")
    return value


def _count(text: str) -> int:
    return _integer(text, 1)


def _seed(text: str) -> int:
    return _integer(text, 0, MAX_SEED)


def _steps(text: str) -> int:
    steps = _integer(text, 1)
    if steps > 100 and steps % 100:
        raise argparse.ArgumentTypeError(
            f"must be at most 100 or a multiple of 100 (training runs epochs of 100 steps); "
            f"received {steps}"
        )
    return steps


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; received {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; received {text!r}")
    return value


def _learning_rate(text: str) -> float:
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive; received {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1); received {text!r}")
    return value


# ---- shared steps -------------------------------------------------------------------------


def _resolve(name: str):
    """What ``name`` names (a PretrainedEntry or a folder's path)."""
    from nfzoo.pretrained import resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _load(name: str, vae_too: bool = False):
    """The model called ``name``: a Flow, or also a FlowVAE where ``vae_too`` (the commands
    that only draw samples)."""
    from nfzoo.flow import Flow
    from nfzoo.pretrained import PretrainedEntry, load
    from nfzoo.vae import FlowVAE

    found = _resolve(name)
    try:
        model = found.load() if isinstance(found, PretrainedEntry) else load(found, source="folder")
    except ValueError as e:  # config.json, the weights or their digest: an invalid input
        raise CLIError(one_line(e)) from None
    if not isinstance(model, Flow) and not (vae_too and isinstance(model, FlowVAE)):
        raise CLIError(
            f"{name} is a {type(model).__name__}, not a flow: this command scores and exports "
            "flows (a FlowVAE samples with nfzoo sample and nfzoo plot; in Python, nfzoo.load)"
        )
    return model


def _event_size(model) -> int:
    return model.event_size if hasattr(model, "event_size") else model.input_dim


def batch_rows(event_size: int) -> int:
    """Rows per batch through a model with events of ``event_size`` values."""
    return max(1, min(MAX_BATCH_ROWS, BATCH_VALUES // max(1, event_size)))


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(index, rows) of the batches that make up ``n`` rows."""
    for i, start in enumerate(range(0, n, size)):
        yield i, min(size, n - start)


def _batch_seed(seed: int | None, index: int) -> int | None:
    """The seed of batch ``index``: the user's seed for the first (so ``-n`` up to one batch
    draws what ``model.sample(n, seed)`` draws), then seeds derived from it."""
    if seed is None or index == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def _context(text: str | None, model, name: str, rows: int | None = None):
    """The ``--context`` of a conditional ``model``: None for an unconditional one, a float32
    vector [C] (one context for every row), or, where ``rows`` (the input's rows) is given,
    a ``Table`` of ``rows`` contexts. Refuses a context given to an unconditional flow,
    missing for a conditional one, or of the wrong length."""
    import numpy as np

    from nfzoo.arrays import SUFFIXES, TableError, open_table

    dim = getattr(model, "context_dim", None)
    if text is None:
        if dim:
            raise CLIError(
                f"{name} is a conditional flow: pass --context, its {dim} values comma-separated "
                f"(e.g. --context={','.join(['0'] * dim)}) or a .npy / .csv file"
            )
        return None
    if not dim:
        raise CLIError(f"{name} is not a conditional flow: it takes no --context")
    if Path(text).suffix.lower() in SUFFIXES or Path(text).is_file():
        try:
            table = open_table(text, columns=dim)
        except TableError as e:
            raise CLIError(f"--context: {one_line(e)}") from None
        if table.rows == 1:
            return table.read()[0]
        if rows is None:
            raise CLIError(
                f"--context {text} has {table.rows} rows; sample takes one context (one row)"
            )
        if table.rows != rows:
            raise CLIError(
                f"--context {text} has {table.rows} rows; expected 1 (one context for every "
                f"row) or as many as the input ({rows})"
            )
        return table
    try:
        values = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        raise CLIError(
            f"--context must be {dim} comma-separated numbers or a .npy / .csv file; "
            f"received {text!r}"
        ) from None
    if len(values) != dim:
        raise CLIError(f"--context has {len(values)} value(s); {name} takes contexts of {dim}")
    if not np.all(np.abs(values) <= float(np.finfo(np.float32).max)):
        raise CLIError(f"--context values must be finite numbers in float32; received {text!r}")
    return values.astype(np.float32)


def _rows_from(blocks: Iterator) -> Callable:
    """``take(k)``: the next ``k`` rows of the row blocks ``blocks`` (a table's chunks cut
    to the batches of another table, rows in order)."""
    import numpy as np

    pending: list = []

    def take(k: int):
        while sum(map(len, pending)) < k:
            pending.append(next(blocks))
        joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending[:] = [joined[k:]] if len(joined) > k else []
        return joined[:k]

    return take


# ---- commands -----------------------------------------------------------------------------


def cmd_list(args) -> None:
    from nfzoo.pretrained import list_pretrained

    try:
        entries = list_pretrained(args.pattern, architecture=args.architecture, kind=args.kind)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not entries:
        print("no pretrained entries match")
        return
    width = max(len(entry.name) for entry in entries)
    print(
        f"{'name':{width}s} {'kind':10s} {'architecture':21s} {'data/target':16s} "
        f"{'metric (nats)':>22s} {'size':>8s}  former names"
    )
    for entry in entries:
        label, value = entry.headline
        data = (
            entry.dataset.get("name")
            or entry.dataset.get("target")
            or entry.dataset.get("task", "")
        )
        print(
            f"{entry.name:{width}s} {entry.kind:10s} {entry.architecture:21s} {data:16s} "
            f"{label:>12s} {value:9.4f} {entry.size_bytes / 1e6:7.2f}M  "
            f"{', '.join(entry.aliases)}"
        )


def _read_config_facts(path: Path) -> dict:
    import json

    try:
        config = json.loads(path.read_text())
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise CLIError(f"{path} is not valid JSON ({one_line(e)})") from None
    if not isinstance(config, dict):
        raise CLIError(f"{path} must hold a JSON object; it holds a {type(config).__name__}")
    return {k: v for k, v in config.items() if k not in ("flow", "flow_vae")}


def cmd_info(args) -> None:
    import json

    from nfzoo.files import CARD_FILE, CONFIG_FILE
    from nfzoo.pretrained import PretrainedEntry

    found = _resolve(args.name)
    folder = found.path if isinstance(found, PretrainedEntry) else found
    if (folder / CARD_FILE).is_file():
        print((folder / CARD_FILE).read_text(), end="")
    elif (folder / CONFIG_FILE).is_file():  # a folder saved without a card: its facts
        facts = _read_config_facts(folder / CONFIG_FILE)
        print(f"# {folder}\n\n{json.dumps(facts, indent=2)}")
    else:
        raise CLIError(f"{folder} has neither {CARD_FILE} nor {CONFIG_FILE}: not a saved model")


def cmd_verify(args) -> None:
    from nfzoo.pretrained import list_pretrained, pretrained_entry, verify

    try:
        if args.names:
            names = [pretrained_entry(n).name for n in args.names]
        else:
            names = [e.name for e in list_pretrained()]
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
        raise CommandError(f"{len(failed)} figure(s) differ from their card: {', '.join(failed)}")
    print(f"all {len(names)} entries reproduce their cards")


def cmd_sample(args) -> None:
    from nfzoo.arrays import check_output, write_table

    output = check_output(args.output, args.overwrite)
    model = _load(args.name, vae_too=True)
    context = _context(args.context, model, args.name)
    kwargs = {} if context is None else {"context": context}
    columns = _event_size(model)

    def draws():
        for i, rows in _batches(args.n, batch_rows(columns)):
            x = model.sample(rows, seed=_batch_seed(args.seed, i), **kwargs).numpy()
            yield x.reshape(rows, columns)

    write_table(output, draws(), args.n, columns, overwrite=args.overwrite)
    print(f"wrote {output} ({args.n} samples)")


def cmd_logprob(args) -> None:
    import numpy as np

    from nfzoo.arrays import check_output, open_table, write_table

    if args.output:
        check_output(args.output, args.overwrite)
    flow = _load(args.name)
    if not flow.has_inverse:
        raise CLIError(f"{args.name} has no inverse, so it cannot score external points")
    table = open_table(args.input, columns=flow.event_size)
    context = _context(args.context, flow, args.name, rows=table.rows)
    contexts = _rows_from(context.chunks()) if hasattr(context, "chunks") else None
    total = 0.0

    def scores():
        nonlocal total
        size = batch_rows(flow.event_size)
        for block in table.chunks():
            for start in range(0, len(block), size):
                x = block[start : start + size].reshape((-1, *flow.data_event_shape))
                kwargs = {}
                if context is not None:
                    kwargs["context"] = contexts(len(x)) if contexts else context
                log_prob = flow.log_prob(x, **kwargs).numpy().astype(np.float64)
                total += float(log_prob.sum())
                yield log_prob[:, None]

    if args.output:
        write_table(args.output, scores(), table.rows, 1, overwrite=args.overwrite)
        print(f"wrote {args.output}")
    else:
        for block in scores():
            np.savetxt(sys.stdout, block, fmt="%.6f")
    print(f"mean log-density {total / table.rows:.4f} nats over {table.rows} rows", file=sys.stderr)


def _vector_architecture(name: str) -> str:
    """``name`` as a registered vector architecture; an unknown name gets the registry's
    error with the closest vector architectures."""
    from nfzoo.architectures import ARCHITECTURES, list_architectures
    from nfzoo.registry import Registry

    vector: Registry[str] = Registry("architecture for vector data (nfzoo train)")
    for arch in list_architectures(event_rank=1):
        vector.add(arch, arch)
    if name in ARCHITECTURES and ARCHITECTURES.canonical(name) not in vector:
        raise CLIError(
            f"nfzoo train fits vector data [n, D]; architecture {name!r} is not one of "
            f"{', '.join(vector.names())} (image flows: nfzoo.build and Flow.fit in Python)"
        )
    try:
        return vector.canonical(ARCHITECTURES.canonical(name) if name in ARCHITECTURES else name)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _training_data(args):
    """The rows to train on: a .npy / .csv file, or points of a toy density (a name)."""
    import numpy as np

    from nfzoo import data
    from nfzoo.arrays import SUFFIXES, open_table

    if Path(args.data).suffix.lower() in SUFFIXES or Path(args.data).is_file():
        x = open_table(args.data).read()
        return x[np.random.RandomState(args.seed).permutation(len(x))]
    try:
        name = data.TOY_DATASETS.canonical(args.data)
    except ValueError as e:
        raise CLIError(f"--data {args.data!r} is not a .npy or .csv file; {one_line(e)}") from None
    return data.make_toy(name, args.num_points, seed=args.seed)


#: build's arguments that ``nfzoo train`` sets itself, and the flag (or reason) for each
_TRAIN_SETS = {
    "seed": "--seed sets it",
    "context_dim": "nfzoo train fits unconditional flows",
    "conditional_base": "nfzoo train fits unconditional flows",
}


def _option(text: str) -> tuple[str, object]:
    """``--option KEY=VALUE``: the value as JSON where it parses (2, 0.5, [32, 32], true,
    null, "relu"), else the text itself (relu)."""
    import json

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"must be KEY=VALUE, e.g. num_layers=8 or hidden_units=[128,128]; received {text!r}"
        )
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _architecture_options(arch: str, pairs: list[tuple[str, object]]) -> dict:
    """The ``--option`` pairs as build's options under their current names, checked before
    any work (a former name warns; an unknown option, one given twice, or one that train
    sets itself is a usage error)."""
    from nfzoo.architectures import check_options

    options: dict = {}
    for key, value in pairs:
        if key in options:
            raise CLIError(f"--option {key} is given twice")
        if key in _TRAIN_SETS:
            raise CLIError(f"--option {key}: {_TRAIN_SETS[key]}")
        options[key] = value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        try:
            options = check_options(arch, options)
        except ValueError as e:
            raise CLIError(f"--option: {one_line(e)}") from None
    for warning in caught:
        print(f"nfzoo: warning: --option: {one_line(warning.message)}", file=sys.stderr)
    return options


def _diverged() -> type[BaseException]:
    """The error ``Flow.fit`` raises on a non-finite loss (``nfzoo.flow.NonFiniteLossError``
    where this nfzoo has it)."""
    from nfzoo import flow

    return getattr(flow, "NonFiniteLossError", CommandError)


def cmd_train(args) -> None:
    import numpy as np

    import nfzoo
    from nfzoo import files
    from nfzoo.training import train_flow

    arch = _vector_architecture(args.arch)
    options = _architecture_options(arch, args.options)
    out = files.check_destination(args.out, args.overwrite, hint="--overwrite")
    x = _training_data(args)
    n_val = int(len(x) * args.val_fraction)
    if len(x) - n_val < 2:
        raise CLIError(f"{args.data} has too few rows to train on ({len(x)})")
    train, val = x[n_val:], x[:n_val]

    def make_flow():
        try:
            flow = nfzoo.build(arch, x.shape[1], seed=args.seed, **options)
        except ValueError as e:  # a value the names' check cannot see (num_layers=0)
            raise CLIError(one_line(e)) from None
        if not flow.has_inverse:
            raise CLIError(
                f"{arch} has no inverse, so it has no log-density of data points and cannot be "
                "trained by maximum likelihood (fit it to a density by reverse KL: nfzoo.vi)"
            )
        return flow

    try:
        result = train_flow(
            make_flow,
            train,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            seed=args.seed,
            strategy=args.strategy,
        )
    except _diverged() as e:
        raise CommandError(f"training diverged ({one_line(e)}); nothing was saved") from None
    flow = result.flow
    metrics = {"train_loss": result.final_loss}
    if n_val:
        metrics["val_nll_nats"] = _mean_nll(flow, val)
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise CommandError(
            f"training diverged ({', '.join(f'{k} {metrics[k]}' for k in bad)}); nothing was "
            "saved. A smaller --lr, or data on a scale near 1, usually trains"
        )
    if n_val:
        _check_beats_gaussian(flow, train, val, "held-out")
    else:
        _check_beats_gaussian(flow, train, train[:GAUSSIAN_CHECK_ROWS], "training")
    if not _is_chief():
        return  # under multi-worker training, one worker writes the result
    flow.save_pretrained(
        out,
        overwrite=args.overwrite,
        metadata={
            "architecture": {"name": arch, "event_dim": int(x.shape[1]), "options": options},
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
        f"saved {args.out} ({result.steps} steps on {result.replicas} replica(s), "
        f"{result.seconds:.1f} s; {summary})"
    )


def _mean_nll(flow, x) -> float:
    from nfzoo.data import mean_nll

    return mean_nll(flow, x, batch_rows(flow.event_size))


def _check_beats_gaussian(flow, train, held_out, rows: str) -> None:
    """Refuses a trained flow that fits ``held_out`` worse than a diagonal Gaussian fitted
    to ``train`` by more than ``GAUSSIAN_MARGIN_NATS`` per dimension: training that ran
    without a non-finite step but got nowhere (data on a scale of 1e6 with Adam's default
    steps; a learning rate far too large) would otherwise be saved as if it had worked."""
    import numpy as np

    from nfzoo.constants import LOG_2PI

    x = np.asarray(train, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    if not np.all(np.isfinite(std) & (std > 0)):
        return  # a constant column: no Gaussian to compare with
    z = (np.asarray(held_out, np.float64) - mean) / std
    gaussian = float(np.mean(np.sum(0.5 * z**2 + np.log(std) + 0.5 * LOG_2PI, axis=1)))
    nll = _mean_nll(flow, held_out)
    if not nll <= gaussian + GAUSSIAN_MARGIN_NATS * x.shape[1]:
        raise CommandError(
            f"training failed: the flow's NLL on {rows} "
            f"rows is {nll:.4g} nats, worse than a Gaussian fitted to the training rows "
            f"({gaussian:.4g} nats) by more than {GAUSSIAN_MARGIN_NATS:g} nat per dimension; "
            "nothing was saved. Standardise the data (values on a scale near 1), or change --lr"
        )


def _is_chief() -> bool:
    import json

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("index", 0) == 0


def cmd_plot(args) -> None:
    from nfzoo import plots

    try:
        plots.image_format(args.output)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not args.overwrite and os.path.lexists(args.output):
        raise CLIError(f"{args.output} exists; pass --overwrite to replace it")
    model = _load(args.name, vae_too=True)
    if getattr(model, "context_dim", None):
        raise CLIError(
            f"{args.name} is a conditional flow (context_dim={model.context_dim}); plot draws "
            "unconditional ones: draw its samples with nfzoo sample --context and plot those"
        )
    is_2d = getattr(model, "event_size", None) == 2
    draw = plots.density_figure if is_2d else plots.sample_grid
    print(f"wrote {draw(model, args.output, seed=args.seed, overwrite=args.overwrite)}")


def cmd_export(args) -> None:
    from nfzoo.exporting import cli as export_cli

    export_cli.run(args)


# ---- parser ---------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``nfzoo export``."""
    parser.add_argument("source", help="pretrained name, pretrained folder, or .keras file")
    parser.add_argument(
        "--formats", nargs="+", default=list(EXPORT_FORMATS), choices=EXPORT_FORMATS
    )
    parser.add_argument("--out", required=True, help="destination folder (created atomically)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is an nfzoo export"
    )
    return parser


def _command(sub, name: str, fn, help: str, tensorflow: bool = True) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(fn=fn, needs_tensorflow=tensorflow)
    return parser


def _add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nfzoo",
        description="Normalizing flows: the zoo.",
        epilog="Exit status: 0 done, 1 failed, 2 wrong command line or input, 3 internal "
        "error, 130 interrupted. Errors are one line on stderr.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "list", cmd_list, "pretrained entries and their metrics", tensorflow=False)
    p.add_argument("pattern", nargs="?", help="glob pattern on names, e.g. 'maf-*' or '*-u1'")
    p.add_argument("--architecture", help="only this architecture (e.g. glow-1d)")
    p.add_argument("--kind", help="only this kind (density, reverse-kl, flow-vae, npe)")

    p = _command(
        sub, "info", cmd_info, "the card of an entry or a save_pretrained folder", tensorflow=False
    )
    p.add_argument("name", help="pretrained entry or save_pretrained folder")

    p = _command(sub, "verify", cmd_verify, "recompute entries' metrics from their weights")
    p.add_argument("names", nargs="*", help="entries (default: every entry)")

    p = _command(sub, "sample", cmd_sample, "draw samples (a flow's or a flow-VAE's) to a file")
    p.add_argument("name", help="pretrained entry or save_pretrained folder")
    p.add_argument("-n", type=_count, default=1000, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="out.npy or out.csv")
    p.add_argument("--seed", type=_seed, default=None, help=f"0 to {MAX_SEED}")
    p.add_argument("--context", help=CONTEXT_HELP + " (one row)")
    _add_overwrite(p, "output file")

    p = _command(sub, "logprob", cmd_logprob, "log-density of each row of a .npy or .csv file")
    p.add_argument("name")
    p.add_argument("--input", required=True)
    p.add_argument(
        "--context", help=CONTEXT_HELP + " (one row for every input row, or one per input row)"
    )
    p.add_argument("-o", "--output", help="write the log-densities here (default: stdout)")
    _add_overwrite(p, "output file")

    p = _command(sub, "train", cmd_train, "train an architecture and save it (save_pretrained)")
    p.add_argument("arch", help="a vector architecture (nfzoo.list_architectures(event_rank=1))")
    p.add_argument("--data", required=True, help="a toy density name, or a .npy / .csv file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=_steps, default=1000, help="up to 100, or a multiple of 100")
    p.add_argument("--batch-size", type=_count, default=256)
    p.add_argument("--lr", type=_learning_rate, default=1e-3, help="Adam's learning rate (> 0)")
    p.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED}")
    p.add_argument("--num-points", type=_count, default=20000, help="points drawn from a toy set")
    p.add_argument("--val-fraction", type=_fraction, default=0.1, help="in [0, 1)")
    p.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none")
    p.add_argument(
        "--option",
        dest="options",
        metavar="KEY=VALUE",
        type=_option,
        action="append",
        default=[],
        help="an architecture option (repeatable), the value as JSON where it parses: "
        "--option num_layers=8 --option hidden_units=[128,128] --option activation=tanh",
    )
    _add_overwrite(p, "folder written by nfzoo")

    p = _command(sub, "plot", cmd_plot, "density and samples (2-D) or a grid of samples")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, help="out.png (or .jpg, .pdf, .svg)")
    p.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED}")
    _add_overwrite(p, "output file")

    p = _command(sub, "export", cmd_export, "SavedModel / ONNX / TFLite, parity-checked")
    add_export_arguments(p)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
