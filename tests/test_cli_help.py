"""`driftgate --help` and `driftgate X --help` answer without importing the heavy dependencies.

Each command's arguments live in a light module (gateway/commands/args/); the command itself is
imported only when it runs. Checked in a fresh interpreter, by what is in `sys.modules` afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("onnxruntime", "asyncpg", "aiohttp", "numpy", "tokenizers", "onnx", "pydantic", "tenacity")

WRAPPER = """
import json, sys
from gateway.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}), file=sys.stderr)
"""


def help_run(*argv: str) -> tuple[dict, str]:
    """(exit code and heavy modules imported, stdout) of `driftgate *argv` in a fresh interpreter."""
    code = f"HEAVY = {HEAVY!r}\n{WRAPPER}"
    env = {k: v for k, v in os.environ.items() if k != "DRIFTGATE_ADMIN_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


@pytest.mark.parametrize("argv", [("--help",), ("migrate", "status", "--help"), ("models", "import", "--help")])
def test_help_imports_no_heavy_dependency(argv):
    result, out = help_run(*argv)
    assert result == {"code": 0, "heavy": []}
    assert "usage: driftgate" in out


def test_the_light_check_sees_the_heavy_imports_once_a_command_runs():
    # `migrate status` runs the command (it stops at once without an admin token): its client is imported
    result, _ = help_run("migrate", "status", "articles", "--url", "http://127.0.0.1:9")
    assert result["code"] == 2
    assert {"aiohttp", "pydantic"} <= set(result["heavy"])


def _all_subparsers(parser):
    """(name, parser) of every command and action under the top-level parser."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in _all_subparsers(sub))


def test_help_examples_keep_their_line_breaks():
    """An example split over lines in the source ends its lines with a backslash in the help, never
    with a run of spaces where the line break was (a lost `\\` in a triple-quoted string)."""
    import re

    from gateway.cli import build_parser

    checked = 0
    for name, sub in _all_subparsers(build_parser()):
        for line in sub.format_help().splitlines():
            checked += 1
            assert not re.search(r"\S {3,}--", line), f"`driftgate {name} --help`: {line!r}"
    assert checked > 200
