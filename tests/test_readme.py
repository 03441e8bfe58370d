"""The README's Python examples run as written (all blocks, in order, in one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4, "README lost its examples"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    for produced in (
        "maf-moons.keras",
        "my-flow/config.json",
        "u1.keras",
        "exported/manifest.json",
        "nsf-conditional/manifest.json",
        "npe-two-moons.png",
    ):
        assert (tmp_path / produced).exists(), produced
