"""The docs stay true to the tree: every relative link resolves, and the layout in
docs/design.md is the one tools/doc_layout.py generates from the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def doc_layout():
    spec = importlib.util.spec_from_file_location("doc_layout", ROOT / "tools" / "doc_layout.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_design_layout_lists_every_module_as_the_tree_has_it():
    layout = doc_layout()
    assert layout.current() == layout.layout(), "run `python tools/doc_layout.py --write`"
