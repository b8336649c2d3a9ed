"""The README's Python examples run as written and show what their comments say.

Each block runs on its own, in a fresh namespace, from a scratch folder that holds the repository's
``examples/`` (the README's relative paths), with ``MINSER_DATA`` at the real corpora and the feature
cache in the scratch folder. Blocks that name files a reader substitutes (``speech.flac``, ``runs/mine``)
are listed as illustrative; every other block must be claimed by a test here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

import minser
from minser.models.config import BaseOptions

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.S | re.M)
# A marker per block: the block that contains it. Illustrative blocks are checked for syntax only.
TESTED = ("sadness_03a02Ta.wav", "majority-class baseline", "log_mel(wave)", "from_spec(model.spec)",
          "onnxruntime.InferenceSession")
ILLUSTRATIVE = ("speech.flac",)


def block(marker: str) -> str:
    found = [code for code in BLOCKS if marker in code]
    assert len(found) == 1, f"{len(found)} README python blocks contain {marker!r}"
    return found[0]


def run(code: str) -> tuple[Any, dict[str, Any]]:
    """Execute a README block; return the value of its last line when that is an expression (what a
    REPL shows) and the block's namespace."""
    tree = ast.parse(code)
    last = tree.body.pop() if isinstance(tree.body[-1], ast.Expr) else None
    namespace: dict[str, Any] = {}
    exec(compile(tree, "README.md", "exec"), namespace)
    value = None if last is None else eval(compile(ast.Expression(last.value), "README.md", "eval"), namespace)
    return value, namespace


@pytest.fixture
def scratch(emodb_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder as a reader's: the repository's examples, the real corpora, an empty cache."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINSER_DATA", str(emodb_root.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_every_block_is_tested_or_illustrative() -> None:
    assert BLOCKS, "no ```python blocks found in README.md"
    for code in BLOCKS:
        ast.parse(code)  # illustrative blocks too must be valid Python
        claimed = [m for m in TESTED + ILLUSTRATIVE if m in code]
        assert len(claimed) == 1, f"README block not claimed by exactly one test marker:\n{code}"


def test_quick_start(scratch: Path) -> None:
    label, _ = run(block("sadness_03a02Ta.wav"))
    assert label == "sadness"


def test_data_example(scratch: Path, capsys: pytest.CaptureFixture) -> None:
    _, ns = run(block("majority-class baseline"))
    assert ns["features"].shape == (339, 40, 750) and ns["lengths"].shape == (339,)
    assert len(ns["splits"]) == 5 and len(ns["folds"]) == 10
    assert re.match(r"WA 0\.\d{3}  UA 0\.250\n", capsys.readouterr().out)  # one class guessed: UA = 1/4


def test_front_end_example(scratch: Path, capsys: pytest.CaptureFixture) -> None:
    run(block("log_mel(wave)"))
    assert capsys.readouterr().out == "(40, 190)\n(2, 40, 750) [190 190]\n"


def test_models_example(scratch: Path) -> None:
    options, ns = run(block("from_spec(model.spec)"))
    assert tuple(ns["logits"].shape) == (40, 4)
    assert set(ns["model"].fusion_weights()) == {"lstm", "transformer"}
    assert isinstance(options, BaseOptions) and options.branches == "both"
    assert issubclass(ns["MODELS"]["cat"].Options, BaseOptions)


def test_onnx_example(scratch: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX example needs the onnx extra")
    from minser.export import main

    # The README's export command, run just before the example.
    assert main([str(Path(minser.__file__).parent / "assets" / "default.pt"), "--format", "onnx",
                 "--out", "default.onnx"]) == 0
    capsys.readouterr()
    run(block("onnxruntime.InferenceSession"))
    assert capsys.readouterr().out == "fear\n"


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)}


@pytest.mark.parametrize("doc", ["README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")))])
def test_relative_links_resolve(doc: str) -> None:
    source = REPO / doc
    text = re.sub(r"```.*?```", "", source.read_text(encoding="utf-8"), flags=re.S)
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = source.parent / path if path else source
        assert target.exists(), f"{doc}: link {link} names a missing file"
        if anchor and target.suffix == ".md":
            assert anchor in heading_anchors(target.read_text(encoding="utf-8")), f"{doc}: link {link}: no such heading"
