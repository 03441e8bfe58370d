"""The nfzoo command: each subcommand on real entries, and bad input that ends in one clear
line and its documented exit status (nfzoo.cli.EXIT_STATUSES), never a traceback, a
half-written file or a lost one; sampling in constant memory; listing without TensorFlow."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nfzoo
from nfzoo import cli
from nfzoo.cli import main

USAGE, FAILED = cli.EXIT_STATUSES["usage"], cli.EXIT_STATUSES["failed"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_info(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "maf-moons" in out and "test NLL" in out
    code, out, _ = run(capsys, "info", "maf-moons")
    assert code == 0 and "held-out (test) NLL" in out
    code, _, err = run(capsys, "info", "maf-moon")
    assert code == 2 and "Did you mean 'maf-moons'" in err


def test_list_filters_and_shows_former_names(capsys):
    code, out, _ = run(capsys, "list", "glow*", "--kind", "density")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0 and set(rows) == {"glow-1d-moons", "glow-1d-pinwheel", "glow-digits"}
    assert rows["glow-1d-moons"].rstrip().endswith("glow1d-moons")
    code, out, _ = run(capsys, "list", "--architecture", "realnvp-image")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["realnvp-image-digits"]
    code, out, _ = run(capsys, "list", "nothing-*")
    assert code == 0 and out.strip() == "no pretrained entries match"
    code, out, _ = run(capsys, "list", "--kind", "npe")
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    tasks = ("gaussian-linear", "two-moons", "gaussian-mixture", "slcp")
    assert code == 0 and rows == {f"npe-{task}": "npe" for task in tasks}
    code, _, err = run(capsys, "list", "--kind", "posterior")
    assert code == 2 and "Unknown kind of pretrained entry 'posterior'" in err


def test_info_takes_a_folder_and_warns_when_a_name_is_also_an_entry(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    flow.save_pretrained("maf-moons", card="# my own moons\n")
    flow.save_pretrained(tmp_path / "plain")
    (tmp_path / "plain" / "card.md").unlink()  # a folder without a card: its facts
    code, out, err = run(capsys, "info", "maf-moons")
    assert code == 0 and out == "# my own moons\n"
    assert "names both the folder ./maf-moons" in err and "taking the folder" in err
    code, out, err = run(capsys, "info", "./maf-moons")
    assert code == 0 and out == "# my own moons\n" and err == ""
    code, out, _ = run(capsys, "info", str(tmp_path / "plain"))
    assert code == 0 and '"weights_sha256"' in out


def test_list_shows_each_kind_with_its_metric(capsys):
    code, out, _ = run(capsys, "list")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0 and len(rows) == len(nfzoo.list_pretrained())
    assert "reverse-kl" in rows["planar-u1"] and "KL(q||p)" in rows["planar-u1"]
    vae_row = rows["flow-vae-iaf-digits"]
    assert "flow-vae" in vae_row and "test IW-NLL" in vae_row and "vae-digits-iaf" in vae_row


def test_a_flow_vae_samples_and_plots_digits_but_has_no_log_density(capsys, tmp_path):
    out_file = tmp_path / "digits.npy"
    code, out, _ = run(capsys, "sample", "vae-digits-iaf", "-n", "20", "-o", str(out_file))
    assert code == 0 and "20 samples" in out
    x = np.load(out_file)
    assert x.shape == (20, 64) and set(np.unique(x)) <= {0.0, 1.0}
    png = tmp_path / "digits.png"
    code, _, _ = run(capsys, "plot", "flow-vae-iaf-digits", "-o", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "logprob", "flow-vae-iaf-digits", "--input", str(out_file))
    assert code == 2 and "is a FlowVAE, not a flow" in err


def test_verify_recomputes_cards(capsys):
    code, out, _ = run(capsys, "verify", "maf-moons", "glow1d-moons")
    assert code == 0, out
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert [(r[0], r[-1]) for r in rows] == [("maf-moons", "yes"), ("glow-1d-moons", "yes")]
    assert out.splitlines()[-1] == "all 2 entries reproduce their cards"
    code, _, err = run(capsys, "verify", "maf-moonz")
    assert code == 2 and "Did you mean 'maf-moons'" in err


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_sample_then_logprob(capsys, tmp_path, suffix):
    out_file = tmp_path / f"s{suffix}"
    code, _, _ = run(capsys, "sample", "maf-moons", "-n", "50", "-o", str(out_file), "--seed", "3")
    assert code == 0 and out_file.exists()
    x = np.load(out_file) if suffix == ".npy" else np.loadtxt(out_file, delimiter=",")
    assert x.shape == (50, 2)
    np.testing.assert_allclose(x, nfzoo.load("maf-moons").sample(50, seed=3), rtol=1e-5, atol=1e-6)
    lp_file = tmp_path / f"lp{suffix}"
    code, _, err = run(capsys, "logprob", "maf-moons", "--input", str(out_file), "-o", str(lp_file))
    assert code == 0 and "mean log-density" in err
    lp = np.load(lp_file) if suffix == ".npy" else np.loadtxt(lp_file, delimiter=",")
    expected = nfzoo.load("maf-moons").log_prob(x.astype(np.float32)).numpy()
    np.testing.assert_allclose(lp.ravel(), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_one_line_errors(capsys, tmp_path):
    three = tmp_path / "three.csv"
    np.savetxt(three, np.ones((4, 3)), delimiter=",")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.0, 1.0], [np.nan, 2.0]]))
    cases = [
        (["logprob", "maf-moons", "--input", str(tmp_path / "missing.npy")], "does not exist"),
        (["logprob", "maf-moons", "--input", str(three)], "has 3 columns; the flow expects 2"),
        (["logprob", "maf-moons", "--input", str(nan)], "1 row(s) with NaN or inf values (rows 2)"),
        (["sample", "maf-moons", "-n", "5", "-o", str(tmp_path / "s.txt")], "must end in .npy"),
        (["sample", "no-such-entry", "-n", "5", "-o", str(tmp_path / "s.npy")], "Unknown"),
        (
            ["train", "mafs", "--data", "moons", "--out", str(tmp_path / "t")],
            "Unknown architecture for vector data (nfzoo train) 'mafs'. Did you mean 'maf'",
        ),
        (
            ["train", "glow", "--data", "moons", "--out", str(tmp_path / "t")],
            "image flows: nfzoo.build and Flow.fit",
        ),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code != 0, argv
        assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.npy", "three.csv"]


def test_plot_writes_pngs(capsys, tmp_path):
    for name in ("maf-moons", "maf-digits"):
        png = tmp_path / f"{name}.png"
        code, _, _ = run(capsys, "plot", name, "-o", str(png))
        assert code == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_saves_a_loadable_flow(capsys, tmp_path):
    data = tmp_path / "data.csv"
    np.savetxt(
        data,
        nfzoo.data.make_toy("8gaussians", 2000, seed=0),
        delimiter=",",
        header="x,y",
        comments="",
    )
    out = tmp_path / "model"
    code, stdout, err = run(
        capsys, "train", "realnvp", "--data", str(data), "--steps", "200", "--out", str(out)
    )
    assert code == 0, err
    assert "saved" in stdout and "val_nll_nats" in stdout
    # not a terminal: one plain line per epoch instead of an ANSI progress bar
    assert "\x1b[" not in stdout and re.search(r"^100/100 - .*loss: ", stdout, re.M), stdout
    flow = nfzoo.load(out)
    assert flow.log_prob(nfzoo.data.make_toy("8gaussians", 10)).shape == (10,)
    code, _, err = run(capsys, "train", "realnvp", "--data", str(data), "--out", str(out))
    assert code == 2 and "exists; pass --overwrite" in err


def test_train_takes_architecture_options(capsys, tmp_path):
    out = tmp_path / "model"
    code, stdout, err = run(
        capsys, "train", "maf", "--data", "moons", "--num-points", "2000", "--steps", "100",
        "--out", str(out), "--option", "num_layers=2", "--option", "hidden_units=[16]",
        "--option", "activation=tanh",
    )  # fmt: skip
    assert code == 0, err
    assert "saved" in stdout
    flow = nfzoo.load(out)
    assert len(flow.flow_layers) == 2
    assert {layer.made.get_config()["activation"] for layer in flow.flow_layers} == {"tanh"}
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["options"] == {
        "num_layers": 2,
        "hidden_units": [16],
        "activation": "tanh",
    }


def test_train_refuses_wrong_options_before_training(capsys, tmp_path, no_training):
    train = ["train", "maf", "--data", "moons", "--out", str(tmp_path / "t")]
    cases = [
        (["--option", "num_steps=3"], "--option: maf has no option 'num_steps' (did you mean "
         "'num_layers'?). Its options (with defaults): num_layers=5"),
        (["--option", "depth=3"], "(did you mean 'num_layers'?)"),
        (["--option", "num_layers"], "argument --option: must be KEY=VALUE"),
        (["--option", "seed=3"], "--option seed: --seed sets it"),
        (["--option", "context_dim=2"], "--option context_dim: nfzoo train fits unconditional"),
        (["--option", "num_layers=2", "--option", "num_layers=3"], "num_layers is given twice"),
    ]  # fmt: skip
    for extra, message in cases:
        code, _, err = run(capsys, *train, *extra)
        assert code == USAGE, (extra, err)
        assert_one_line_error(err, "train", message)
    glow_1d = ["train", "glow-1d", *train[2:], "--option", "num_steps=2", "--option"]
    code, _, err = run(capsys, *glow_1d, "num_layers=2")
    assert code == USAGE
    assert_one_line_error(err, "train", "'num_steps' is the former name of 'num_layers'")
    assert list(tmp_path.iterdir()) == []


def test_train_warns_of_a_former_option_name_and_refuses_a_bad_value(capsys, tmp_path):
    assert cli._architecture_options("glow-1d", [("num_steps", 2)]) == {"num_layers": 2}
    err = capsys.readouterr().err
    assert err == (
        "nfzoo: warning: --option: glow-1d: the option 'num_steps' is now called 'num_layers'; "
        "the former name stops working in the next release.\n"
    )
    code, _, err = run(
        capsys, "train", "maf", "--data", "moons", "--num-points", "100", "--out",
        str(tmp_path / "t"), "--option", "num_layers=0",
    )  # fmt: skip
    assert code == USAGE
    assert_one_line_error(err, "train", "num_layers must be a positive integer; received 0")
    assert list(tmp_path.iterdir()) == []


def test_installed_command_runs_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "nfzoo.cli", "info", "nothing-like-this"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Unknown pretrained entry" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line: no TensorFlow start-up noise


def assert_one_line_error(err: str, command: str, message: str) -> None:
    assert err.count("\n") == 1 and err.startswith(f"nfzoo {command}: error: "), err
    assert message in err and "Traceback" not in err, err


def test_every_wrong_input_is_one_line_with_status_2(capsys, tmp_path):
    """The issue's list: each used to be a traceback, a silent oddity or another status."""
    inputs = {
        "empty.npy": None,  # 0 bytes
        "complex.npy": np.ones((4, 2), np.complex128),
        "no-rows.npy": np.zeros((0, 2)),
        "huge.npy": np.array([[1e39, 0.0], [0.0, 0.0]]),  # finite in float64, inf in float32
    }
    for name, array in inputs.items():
        if array is None:
            (tmp_path / name).write_bytes(b"")
        else:
            np.save(tmp_path / name, array)
    score = ["logprob", "maf-moons", "--input"]
    train = ["train", "maf", "--data", "moons", "--out", str(tmp_path / "t")]
    sample = ["sample", "maf-moons", "-o", str(tmp_path / "s.npy")]
    cases = [
        ([*score, str(tmp_path / "empty.npy")], "is empty (0 bytes)"),
        ([*score, str(tmp_path / "complex.npy")], "holds complex numbers (dtype complex128)"),
        ([*score, str(tmp_path / "no-rows.npy")], "has no rows"),
        ([*score, str(tmp_path / "huge.npy")], "beyond float32's range"),
        ([*train, "--val-fraction", "-0.5"], "argument --val-fraction: must be in [0, 1)"),
        ([*train, "--steps", "150"], "argument --steps: must be at most 100 or a multiple"),
        ([*train, "--lr", "-1"], "argument --lr: must be positive"),
        ([*train, "--lr", "nan"], "argument --lr: must be a finite number"),
        ([*train, "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295]"),
        ([*sample, "--seed", "1.5"], "argument --seed: must be an integer in [0, 4294967295]"),
        ([*sample, "--seed", str(2**70)], "argument --seed: must be an integer in [0, 42949"),
        ([*sample, "-n", "0"], "argument -n: must be an integer >= 1; received '0'"),
        ([*sample, "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "maf", "--data", "moonz", "--out", "t"], "Did you mean 'moons'?"),
        (["train", "sylvester-orthogonal", *train[2:]], "has no inverse, so it has no log-dens"),
        (["plot", "maf-moons", "-o", str(tmp_path / "x.gif")], "one of .png, .jpg, .jpeg, .pdf"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == USAGE, (argv, err)
        assert_one_line_error(err, argv[0], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(inputs)


def test_out_of_memory_is_one_line_with_status_1(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "maf", "--data", "moons", "--num-points", str(10**13), "--out", "x"
    )
    assert code == FAILED
    assert_one_line_error(err, "train", "out of memory: Unable to allocate")


def test_an_internal_error_is_one_line_with_status_3(capsys, monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_list", broken)
    code, _, err = run(capsys, "list")
    assert code == cli.EXIT_STATUSES["internal"]
    assert_one_line_error(err, "list", "internal error, please report it: KeyError: 'a bug'")


def test_training_that_diverges_saves_nothing(capsys, tmp_path):
    x = np.random.RandomState(0).normal(size=(64, 2))
    x[:4] *= 1e20  # the loss overflows float32
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "model"
    code, _, err = run(
        capsys, "train", "nice", "--data", str(tmp_path / "x.npy"), "--out", str(out),
        "--steps", "2", "--batch-size", "16",
    )  # fmt: skip
    assert code == FAILED
    assert_one_line_error(err, "train", "training diverged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.fixture
def no_training(monkeypatch):
    """Refusals must come before the work: training fails the test if it starts."""

    def train_flow(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr("nfzoo.training.train_flow", train_flow)


def test_train_refuses_destinations_it_would_not_replace_before_training(
    capsys, tmp_path, monkeypatch, no_training
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2\n")
    monkeypatch.chdir(mine)
    argv = ["train", "nice", "--data", "moons", "--overwrite", "--out"]
    for out, message in [
        (".", "is the working directory or holds it"),
        (str(tmp_path), "is the working directory or holds it"),
        (str(mine), "is the working directory or holds it"),
    ]:
        code, _, err = run(capsys, *argv, out)
        assert code == USAGE, err
        assert_one_line_error(err, "train", message)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "mine")
    assert_one_line_error(err, "train", "not a folder written by nfzoo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no ..old-*, no partial
    assert os.listdir(mine) == ["data.csv"]


def test_sample_refuses_to_overwrite_unless_asked(capsys, tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("mine\n")
    code, _, err = run(capsys, "sample", "maf-moons", "-n", "5", "-o", str(out))
    assert code == USAGE and out.read_text() == "mine\n"
    assert_one_line_error(err, "sample", "exists; pass --overwrite to replace it")
    code, _, _ = run(capsys, "sample", "maf-moons", "-n", "5", "-o", str(out), "--overwrite")
    assert code == 0 and np.loadtxt(out, delimiter=",").shape == (5, 2)


@pytest.mark.parametrize(
    "suffix, magic",
    [(".jpg", b"\xff\xd8\xff"), (".JPEG", b"\xff\xd8\xff"), (".pdf", b"%PDF"), (".svg", b"<?xml")],
)
def test_plot_writes_the_format_its_extension_names(capsys, tmp_path, suffix, magic):
    image = tmp_path / f"moons{suffix}"
    code, _, err = run(capsys, "plot", "maf-moons", "-o", str(image))
    assert code == 0, err
    assert image.read_bytes().startswith(magic)  # PNG bytes whatever the name, before
    code, _, err = run(capsys, "plot", "maf-moons", "-o", str(image))
    assert code == USAGE and "exists; pass --overwrite" in err


def test_export_without_its_runtimes_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )

    def load_flow(source):
        raise AssertionError("loaded the flow before checking the runtimes")

    monkeypatch.setattr("nfzoo.exporting.cli.load_flow", load_flow)
    code, _, err = run(capsys, "export", "maf-moons", "--formats", "onnx", "--out", "e")
    assert code == USAGE
    assert_one_line_error(err, "export", "exporting to onnx needs onnxruntime")
    assert "pip install 'nfzoo[export]'" in err


def test_the_parser_agrees_with_the_library():
    from nfzoo.exporting import FORMATS
    from nfzoo.training import STRATEGIES

    assert cli.EXPORT_FORMATS == FORMATS
    strategy = next(a for a in cli.build_parser()._actions if a.dest == "command")
    train = strategy.choices["train"]
    assert next(a for a in train._actions if a.dest == "strategy").choices == STRATEGIES


def peak_mib_during(fn) -> float:
    """How far the process's peak resident memory rose while ``fn`` ran (Linux: the peak is
    reset through /proc/self/clear_refs first)."""

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_sampling_streams_in_constant_memory(capsys, tmp_path):
    """300,000 samples through 512-wide conditioners held 1.2 GB of activations at once."""
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[512])
    flow.save_pretrained(tmp_path / "wide")
    wide = str(tmp_path / "wide")
    run(capsys, "sample", wide, "-n", "10", "-o", str(tmp_path / "warm.npy"))  # traces
    out = tmp_path / "s.npy"
    grown = peak_mib_during(lambda: main(["sample", wide, "-n", "300000", "-o", str(out)]))
    assert grown < 250, f"{grown:.0f} MiB"
    x = np.load(out, mmap_mode="r")
    assert x.shape == (300000, 2) and np.isfinite(x).all()


def test_batches_are_seeded_apart_and_scored_in_order(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "MAX_BATCH_ROWS", 64)  # many batches
    monkeypatch.setattr("nfzoo.arrays.CHUNK_VALUES", 100)  # and many chunks of input
    out, scores = tmp_path / "s.npy", tmp_path / "lp.csv"
    assert run(capsys, "sample", "maf-moons", "-n", "200", "-o", str(out), "--seed", "5")[0] == 0
    x = np.load(out)
    flow = nfzoo.load("maf-moons")
    np.testing.assert_allclose(x[:64], flow.sample(64, seed=5), rtol=1e-5, atol=1e-6)
    assert not np.allclose(x[:64], x[64:128])  # each batch its own seed
    code, _, err = run(capsys, "logprob", "maf-moons", "--input", str(out), "-o", str(scores))
    assert code == 0
    expected = flow.log_prob(x).numpy()
    np.testing.assert_allclose(np.loadtxt(scores), expected, rtol=1e-5, atol=1e-5)
    assert f"mean log-density {expected.mean():.4f} nats over 200 rows" in err


def test_help_list_and_info_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from nfzoo.cli import main\n"
        "assert main(['list']) == 0 and main(['info', 'maf-moons']) == 0\n"
        "assert main(['list', '--kind', 'npe']) == 0 and main(['info', 'npe-two-moons']) == 0\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'tensorflow', 'keras', 'sklearn'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_a_command_that_imports_tensorflow_prints_no_noise(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nfzoo.cli", "sample", "maf-moons", "-n", "3", "-o", "s.npy"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no absl, oneDNN or cuInit lines
    assert result.stdout == "wrote s.npy (3 samples)\n"


def test_export_prints_progress_and_no_noise(tmp_path):
    """In a fresh process, as a user runs it (in this one TensorFlow is already imported, so
    its start-up lines are not the command's to silence)."""
    flow = nfzoo.build("planar", 2, num_layers=2)
    folder = flow.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "exported"
    argv = ["export", str(folder), "--formats", "onnx", "tflite", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "nfzoo.cli", *argv],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no absl lines, tf2onnx deprecation notices, LiteRT delegate
    assert result.stdout.startswith("exporting tiny to onnx, tflite: converting")
    lines = result.stdout.splitlines()
    for step in ("converting to tflite", "converting to onnx", "checking onnx in onnxruntime"):
        assert any(line.strip().startswith(step) for line in lines), (step, lines)
    assert lines.index("  converting to tflite") < lines.index(
        next(line for line in lines if "checking tflite" in line)
    )
    assert json.loads((out / "manifest.json").read_text())["name"] == "tiny"


# ---- invalid folders and registries ------------------------------------------------------


def _without_modules(config):
    if isinstance(config, dict):
        config.pop("module", None) if "class_name" in config else None
        for value in config.values():
            _without_modules(value)
    elif isinstance(config, list):
        for value in config:
            _without_modules(value)
    return config


BROKEN_CONFIGS = {
    "no-digest": (
        lambda c: {k: v for k, v in c.items() if k != "weights_sha256"},
        "must record the sha256 of model.weights.h5",
    ),
    "no-layers": (
        lambda c: {**c, "flow": {k: v for k, v in c["flow"].items() if k != "layers"}},
        "'flow' must hold 'layers'",
    ),
    "top-level-list": (lambda c: [c], "must hold a JSON object"),
    "deep": (lambda c: "[" * 100000 + "]" * 100000, "nests deeper than 64 levels"),
    "no-module": (_without_modules, "must name its 'module'"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_CONFIGS))
def test_an_invalid_saved_folder_is_one_line_with_status_2(capsys, tmp_path, broken):
    folder = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8]).save_pretrained(tmp_path / "f")
    edit, message = BROKEN_CONFIGS[broken]
    config = edit(json.loads((folder / "config.json").read_text()))
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    sample = ["sample", str(folder), "-n", "3", "-o", str(tmp_path / "s.npy")]
    export = ["export", str(folder), "--formats", "saved_model", "--out", str(tmp_path / "e")]
    for argv in (sample, export):
        code, _, err = run(capsys, *argv)
        assert code == USAGE, err  # exit 1 before: an invalid input, not a failed command
        assert_one_line_error(err, argv[0], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_registry_with_an_unknown_field_is_one_line_with_status_2(capsys, tmp_path, monkeypatch):
    index = json.loads((nfzoo.pretrained.pretrained_dir() / "index.json").read_text())
    index["maf-moons"]["license"] = "MIT"
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("NFZOO_PRETRAINED_DIR", str(tmp_path))
    code, _, err = run(capsys, "list")
    assert code == USAGE
    assert_one_line_error(err, "list", "must have exactly the fields")


# ---- training that diverges or gets nowhere ----------------------------------------------


@pytest.mark.parametrize(
    "scale, extra, message",
    [
        (1e6, [], "worse than a Gaussian fitted to the training rows"),  # was saved, NLL 1303
        (3e38, [], "training diverged"),  # finite in float32, its square is not
        (1.0, ["--lr", "100", "--steps", "20"], "training diverged"),
    ],
)
def test_training_that_diverges_or_gets_nowhere_exits_1_and_saves_nothing(
    capsys, tmp_path, scale, extra, message
):
    x = np.random.RandomState(0).normal(size=(512, 2))
    np.save(tmp_path / "x.npy", np.clip(x * scale, -3.3e38, 3.3e38))
    argv = ["train", "maf", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "m")]
    code, _, err = run(capsys, *argv, "--steps", "2", "--batch-size", "64", *extra)
    assert code == FAILED, err
    assert_one_line_error(err, "train", message)
    assert "nothing was saved" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# ---- conditional flows -------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A small conditional NSF whose density depends on its context (weights perturbed: the
    conditioners' last layers start at zero)."""
    flow = nfzoo.build("nsf", 2, context_dim=2)
    rng = np.random.RandomState(0)
    for w in flow.trainable_weights:
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape).astype(np.float32))
    folder = flow.save_pretrained(tmp_path_factory.mktemp("cond") / "cond")
    return nfzoo.load(folder), str(folder)


def test_sample_with_a_context(capsys, tmp_path, conditional):
    flow, folder = conditional
    out = tmp_path / "s.npy"
    code, _, err = run(
        capsys, "sample", folder, "-n", "40", "-o", str(out), "--seed", "1", "--context", "-0.5,2"
    )  # a vector starting with '-' is the option's value, not an option
    assert code == 0, err
    expected = flow.sample(40, seed=1, context=np.array([-0.5, 2.0], np.float32))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)
    np.savetxt(tmp_path / "c.csv", [[-0.5, 2.0]], delimiter=",")
    out2 = tmp_path / "s2.csv"
    code, _, err = run(
        capsys, "sample", folder, "-n", "40", "-o", str(out2), "--seed", "1",
        "--context", str(tmp_path / "c.csv"),
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_allclose(np.loadtxt(out2, delimiter=","), expected, rtol=1e-5, atol=1e-5)


def test_logprob_with_one_context_or_one_per_row(capsys, tmp_path, conditional, monkeypatch):
    monkeypatch.setattr(cli, "MAX_BATCH_ROWS", 16)  # contexts cut to many batches
    monkeypatch.setattr("nfzoo.arrays.CHUNK_VALUES", 22)  # from chunks of another length
    flow, folder = conditional
    rng = np.random.RandomState(0)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    c = rng.normal(size=(50, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", c)
    score = ["logprob", folder, "--input", str(tmp_path / "x.npy"), "-o"]
    code, _, err = run(
        capsys, *score, str(tmp_path / "a.npy"), "--context", str(tmp_path / "c.npy")
    )
    assert code == 0, err
    expected = flow.log_prob(x, context=c).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "a.npy").ravel(), expected, rtol=1e-5, atol=1e-5)
    code, _, err = run(capsys, *score, str(tmp_path / "b.npy"), "--context=0.3,-1")
    assert code == 0, err
    one = flow.log_prob(x, context=np.array([0.3, -1.0], np.float32)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "b.npy").ravel(), one, rtol=1e-5, atol=1e-5)
    assert not np.allclose(one, expected, atol=1e-3)  # the context matters


def test_wrong_contexts_are_one_line_with_status_2(capsys, tmp_path, conditional):
    _, folder = conditional
    np.save(tmp_path / "x.npy", np.zeros((6, 2), np.float32))
    np.save(tmp_path / "c3.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((1, 3), np.float32))
    sample = ["sample", folder, "-n", "5", "-o", str(tmp_path / "s.npy")]
    score = ["logprob", folder, "--input", str(tmp_path / "x.npy")]
    cases = [
        (sample, "is a conditional flow: pass --context, its 2 values"),
        ([*sample, "--context", "1,2,3"], "--context has 3 value(s); "),
        ([*sample, "--context", "1,x"], "--context must be 2 comma-separated numbers"),
        ([*sample, "--context", ""], "--context must be 2 comma-separated numbers"),
        ([*sample, "--context", "1,1e39"], "must be finite numbers in float32"),
        ([*sample, "--context", str(tmp_path / "c3.npy")], "sample takes one context (one row)"),
        ([*score, "--context", str(tmp_path / "c3.npy")], "has 3 rows; expected 1 (one context"),
        ([*score, "--context", str(tmp_path / "wide.npy")], "has 3 columns; the flow expects 2"),
        ([*score], "is a conditional flow: pass --context"),
        (["sample", "maf-moons", "-n", "5", "-o", str(tmp_path / "s.npy"), "--context", "1,2"],
         "maf-moons is not a conditional flow: it takes no --context"),
        (["plot", folder, "-o", str(tmp_path / "p.png")], "plot draws unconditional ones"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == USAGE, (argv, err)
        assert_one_line_error(err, argv[0], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3.npy", "wide.npy", "x.npy"]
