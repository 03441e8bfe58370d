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
