"""The README's Python examples run as written: every block in order in one namespace, apart
from the NPE example, which is self-contained (tools/npe_figure.py runs it alone too) and runs
as a test of its own so that the two share the suite's workers."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: the self-contained block that trains an NPE and draws its corner plot
NPE_FIGURE = '"npe-two-moons.png"'


def _blocks(npe: bool) -> list[tuple[int, str]]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4, "README lost its examples"
    assert sum(NPE_FIGURE in b for b in blocks) == 1, "README lost its NPE example"
    return [(i, b) for i, b in enumerate(blocks) if (NPE_FIGURE in b) == npe]


@pytest.mark.parametrize(
    "npe, produced",
    [
        (
            False,
            (
                "maf-moons.keras",
                "my-flow/config.json",
                "u1.keras",
                "exported/manifest.json",
                "nsf-conditional/manifest.json",
            ),
        ),
        (True, ("npe-two-moons.png",)),
    ],
    ids=["examples", "npe-example"],
)
def test_readme_python_examples_run(npe, produced, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for i, block in _blocks(npe):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    for name in produced:
        assert (tmp_path / name).exists(), name
