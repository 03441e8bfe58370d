"""The nfzoo command: each subcommand on real entries, and bad input that ends in one clear
line and a non-zero status, never a traceback or a half-written file."""

import subprocess
import sys

import numpy as np
import pytest

import nfzoo
from nfzoo.cli import main


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


def test_list_shows_each_kind_with_its_metric_and_flow_commands_refuse_a_vae(capsys, tmp_path):
    code, out, _ = run(capsys, "list")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "reverse-kl" in rows["planar-u1"] and "KL(q||p)" in rows["planar-u1"]
    assert "flow-vae" in rows["vae-digits-iaf"] and "test IW-NLL" in rows["vae-digits-iaf"]
    code, _, err = run(capsys, "sample", "vae-digits-iaf", "-n", "5", "-o", str(tmp_path / "s.npy"))
    assert code == 2 and "is a FlowVAE, not a flow" in err
    assert not (tmp_path / "s.npy").exists()


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
            "architecture 'mafs' is not one of",
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
    flow = nfzoo.load(out)
    assert flow.log_prob(nfzoo.data.make_toy("8gaussians", 10)).shape == (10,)
    code, _, err = run(capsys, "train", "realnvp", "--data", str(data), "--out", str(out))
    assert code == 2 and "exists; pass --overwrite" in err


def test_installed_command_runs_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "nfzoo.cli", "info", "nothing-like-this"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Unknown pretrained entry" in result.stderr and "Traceback" not in result.stderr
