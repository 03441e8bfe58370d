"""The API documentation (``make docs``) builds from the docstrings with warnings as errors, and
shows readers what it is for: a page for every area, the central formulas rendered by MathJax
and the ASCII formula blocks preformatted, as ``help()`` shows them."""

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "tools" / "docs"
LAYER_MODULES = sorted(
    f"nfzoo.layers.{p.stem}" for p in (ROOT / "nfzoo" / "layers").glob("[!_]*.py")
)
#: one page per area: page -> the modules it documents
PAGES = {
    "base": ["nfzoo.bijector_layer"],
    "flow": ["nfzoo.flow"],
    "layers": LAYER_MODULES,
    "nets": ["nfzoo.nets"],
    "architectures": ["nfzoo.architectures"],
    "pretrained": ["nfzoo.pretrained"],
    "export": ["nfzoo.exporting"],
    "vi": ["nfzoo.vi", "nfzoo.targets"],
    "vae": ["nfzoo.vae", "nfzoo.amortized"],
    "npe": ["nfzoo.npe"],
    "data": ["nfzoo.data"],
}


def _conf():
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def _math(page: str) -> list[str]:
    """The LaTeX of every displayed formula of a page, as MathJax reads it."""
    blocks = re.findall(r'<div class="math[^"]*">(.*?)</div>', page, flags=re.S)
    return [html.unescape(b) for b in blocks]


def _preformatted(page: str) -> list[str]:
    blocks = re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", b)) for b in blocks]


def test_docs_build_without_warnings_and_render_the_math(tmp_path):
    # one test, so that a parallel run builds the site once
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "sphinx -W failed:\n" + "\n".join(warnings or [result.stderr])

    assert (tmp_path / "index.html").is_file()
    pages = {name: (tmp_path / f"{name}.html") for name in PAGES}
    missing = [name for name, path in pages.items() if not path.is_file()]
    assert not missing, f"no page for {missing}"
    text = {name: path.read_text(encoding="utf-8") for name, path in pages.items()}
    for name, modules in PAGES.items():
        absent = [m for m in modules if f'id="module-{m}"' not in text[name]]
        assert not absent, f"{name}.html does not document {absent}"

    # the coupling law, rendered: MathJax is loaded and finds its LaTeX
    layers = text["layers"]
    assert "mathjax" in layers.lower()
    assert any(r"x_b = z_b \odot e^{s(z_a)} + t(z_a)" in m for m in _math(layers))
    for name in ("flow", "vi", "vae"):
        assert _math(text[name]), f"{name}.html shows no rendered formula"
    # ASCII formula blocks are preformatted, not reflowed as block quotes; an ASCII block that
    # a LaTeX block restates shows rendered only
    assert any("b' = b * exp(s) + t" in p for p in _preformatted(layers))
    assert not any("affine (RealNVP):" in p for p in _preformatted(layers))
    quoted = [name for name, page in text.items() if "<blockquote" in page]
    assert not quoted, f"indented blocks reflowed as block quotes on {quoted}"


def test_formula_blocks_become_literal_blocks():
    convert = _conf().literal_formula_blocks
    doc = [
        "The law:",
        "",
        "    x = z * exp(s) + t",
        "",
        "Given as a literal::",
        "",
        "    kept as it is",
        "",
        "* an item",
        "",
        "      y = f(x)",
        "",
        ":param x: a field",
        "",
        "    its body",
    ]
    assert convert(doc) == [
        "The law:",
        "",
        "::",
        "",
        "    x = z * exp(s) + t",
        "",
        "Given as a literal::",
        "",
        "    kept as it is",
        "",
        "* an item",
        "",
        "  ::",
        "",
        "      y = f(x)",
        "",
        ":param x: a field",
        "",
        "    its body",
    ]


def test_ascii_block_restated_in_latex_shows_once():
    convert = _conf().literal_formula_blocks
    doc = ["The law:", "", "    x = z * exp(s)", "", ".. math::", "", "    x = z e^s", "", "Done."]
    assert convert(doc) == ["The law:", "", ".. math::", "", "    x = z e^s", "", "Done."]
