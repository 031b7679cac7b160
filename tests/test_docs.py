"""The docs say what the code does, where that can be checked mechanically: every `edgelm` command and option a
doc shows exists in the CLI, the format version quoted is the one the runtime writes, the `make` targets the README
names exist, and the package tables list every installed package."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from edgelm.cli import cli
from edgelm.runtime.manifest import FORMAT_VERSION

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE = re.compile(r"`(edgelm [a-z][^`]*)`")


def command_lines(text: str) -> list[str]:
    """`edgelm ...` invocations: lines of code blocks (comments cut off) and inline code spans."""
    lines = [line.split(" #")[0].strip() for block in FENCE.findall(text) for line in block.splitlines()]
    lines = [line for line in lines if re.match(r"edgelm [a-z][a-z-]*(\s|$)", line)]  # not sample output
    return lines + INLINE.findall(FENCE.sub("", text))


def invocations() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in command_lines(doc.read_text())]


def test_the_docs_show_commands():
    assert len(invocations()) > 30  # the check below checks something


@pytest.mark.parametrize("doc,line", invocations())
def test_every_command_and_option_shown_exists(doc, line):
    words = line.split()
    name = words[1]
    assert name in cli.commands, f"{doc}: `{line}` names no edgelm command (have {sorted(cli.commands)})"
    known = {opt.split("=")[0] for p in cli.commands[name].params for opt in (*p.opts, *p.secondary_opts)}
    known |= {"-h", "--help"}
    shown = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
    assert shown <= known, f"{doc}: `{line}`: `edgelm {name}` has no option {sorted(shown - known)}"


def test_format_version_quoted_is_the_runtimes():  # not the error message's example of a newer one
    quoted = {(doc.name, int(v)) for doc in DOCS
              for v in re.findall(r"format_version\W{0,4}(?:is\s+)?(\d+)\b(?! is newer)", doc.read_text())}
    assert quoted, "no doc quotes format_version"
    assert {v for _, v in quoted} == {FORMAT_VERSION}, sorted(quoted)


def test_make_targets_named_in_the_readme_exist():
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"`make ([a-z]+)`", (ROOT / "README.md").read_text()))
    named |= {m for block in FENCE.findall((ROOT / "README.md").read_text())
              for m in re.findall(r"^make ([a-z]+)", block, re.M)}
    assert {"demo", "test"} <= named
    assert named <= targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


def test_package_tables_list_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {folder for name, folder in packages.items() if name.count(".") == 1}  # stages, not sub-packages
    design, readme = (ROOT / "docs/design.md").read_text(), (ROOT / "README.md").read_text()
    for folder in folders | {"edgelm"}:
        assert f"`{folder}/`" in design, f"docs/design.md's package table leaves out {folder}/"
        assert re.search(rf"^{folder}/\s", readme, re.M), f"README's layout leaves out {folder}/"


def test_readme_layout_names_every_script():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in sorted((ROOT / "scripts").glob("*.py")) if p.name not in readme]
    assert not missing, f"README's layout leaves out scripts/{missing}"
