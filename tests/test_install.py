"""nfzoo as users install it: the sdist is built from the source tree, the wheel from the
sdist (so the sdist must carry everything), the wheel is installed into a fresh virtual
environment outside the repository, and there, from another folder, `nfzoo list` shows every
entry, `nfzoo verify` loads every entry (digests checked) and reproduces its card (of the
amortized posteriors, whose C2ST takes minutes, one), and every amortized posterior samples
theta for an observation.

The fresh environment reuses the test environment's installed dependencies instead of
downloading them: a .pth file puts the running interpreter's site-packages on its path
(`python -m venv --system-site-packages` would give the base interpreter's, not those of the
virtual environment the tests run in). Only path lines are read from that .pth, so an editable
install of nfzoo in the test environment cannot leak in: nfzoo is imported from the wheel.
"""

import configparser
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what the build never needs: version control, environments, outputs, the export shelf
NOT_SOURCE = (".git", ".venv", "venv", "out", "build", "dist", "export", "*.egg-info")
NOT_SOURCE += ("__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis")
WHEEL_BUDGET = 60e6
ENTRY_FILES = ("config.json", "model.weights.h5", "card.md")


def _index() -> dict:
    """The registry as the source tree holds it, read without nfzoo."""
    return json.loads((ROOT / "pretrained" / "index.json").read_text())


def _theta_dim(name: str) -> int:
    """The parameter count of an npe entry, from its record (read without nfzoo)."""
    config = json.loads((ROOT / "pretrained" / name / "config.json").read_text())
    return config["architecture"]["event_shape"][0]


def _build(hook: str, source: Path, out: Path) -> Path:
    """Runs a PEP 517 hook of the project's backend (setuptools) in ``source``; no build
    isolation, so nothing is downloaded."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def _run(argv, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_setup_cfg_lists_every_package():
    """Packages are listed by name in setup.cfg (find: cannot see the mapped data package);
    a package missing from the list would be missing from the wheel."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nfzoo").rglob("__init__.py")
    }
    assert listed == on_disk | {"nfzoo._pretrained"}
    assert config["options"]["package_dir"].split() == ["nfzoo._pretrained", "=", "pretrained"]


def test_the_installed_wheel_lists_loads_and_reproduces_every_entry(tmp_path):
    index = _index()
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))

    sdist = _build("build_sdist", source, tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        members = set(tar.getnames())
        top = sdist.name.removesuffix(".tar.gz")
        assert f"{top}/pretrained/index.json" in members
        for name in index:
            for file in ENTRY_FILES:
                assert f"{top}/pretrained/{name}/{file}" in members, (name, file)
        tar.extractall(tmp_path / "unpacked", filter="data")
    wheel = _build("build_wheel", tmp_path / "unpacked" / top, tmp_path / "dist")

    assert wheel.stat().st_size < WHEEL_BUDGET, f"{wheel.stat().st_size / 1e6:.1f} MB"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {n for n in names if n.startswith("nfzoo/_pretrained/")}
    expected = {f"nfzoo/_pretrained/{e}/{f}" for e in index for f in ENTRY_FILES}
    assert shipped == expected | {"nfzoo/_pretrained/index.json"}
    assert not any(n.startswith(("export/", "tests/", "tools/", "pretrained/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, dict(os.environ))
    python, nfzoo_command = venv / "bin" / "python", venv / "bin" / "nfzoo"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NFZOO_PRETRAINED_DIR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp_path, env)
    packages = _run([python, "-c", "import site; print(site.getsitepackages()[0])"], tmp_path, env)
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(packages.stdout.strip()) / "_test_dependencies.pth").write_text("\n".join(deps) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import nfzoo; print(nfzoo.__file__); print(nfzoo.pretrained.pretrained_dir())",
        ],
        elsewhere,
        env,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    listed = _run([nfzoo_command, "list"], elsewhere, env).stdout.splitlines()
    rows = {line.split()[0]: line for line in listed[1:]}
    assert set(rows) == set(index)
    for name, row in rows.items():  # each row shows one of the entry's recorded metrics
        assert any(f"{v:.4f}" in row for v in index[name]["metrics"].values()), row

    # every entry but the amortized posteriors, whose C2ST on 10 observations takes minutes
    # each (tests/test_npe.py recomputes those cards, marked slow), and one of them
    verified = [*sorted(n for n in index if not n.startswith("npe-")), "npe-two-moons"]
    report = _run([nfzoo_command, "verify", *verified], elsewhere, env).stdout.splitlines()
    assert report[-1] == f"all {len(verified)} entries reproduce their cards"
    checked = [line.split() for line in report[1:-1]]
    assert {row[0] for row in checked} == set(verified)
    assert all(row[-1] == "yes" for row in checked)

    # every amortized posterior loads from the wheel and samples theta given an observation
    posteriors = sorted(n for n in index if n.startswith("npe-"))
    assert posteriors
    code = (
        "import sys, nfzoo\n"
        "from nfzoo import npe\n"
        "for name in sys.argv[1:]:\n"
        "    task = npe.get_task(name.removeprefix('npe-'))\n"
        "    theta = nfzoo.load(name).sample(100, context=task.observation(1), seed=0)\n"
        "    print(name, *theta.shape, int(task.in_support(theta.numpy()).sum()))\n"
    )
    sampled = _run([python, "-c", code, *posteriors], elsewhere, env).stdout.splitlines()
    assert [line.split()[0] for line in sampled] == posteriors
    for line in sampled:
        name, n, dim, inside = line.split()
        # the shape is the task's parameter count; most draws fall inside the prior's support
        assert (int(n), int(dim)) == (100, _theta_dim(name)) and int(inside) > 50, line


def test_the_weights_have_one_copy_in_the_source_tree():
    """The package maps pretrained/ instead of holding a second copy of it."""
    assert not (ROOT / "nfzoo" / "_pretrained").exists()
    assert not list((ROOT / "nfzoo").rglob("*.h5"))
