"""The docs stay true: docs/configuration.md is current and names every field of configs/base.py, and
every command that README.md and docs/ show exists (its --help runs)."""
import glob
import os
import re
import subprocess
import sys

import pytest

from configs import base
from t2ijax import config_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "docs", "configuration.md")
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True))
COMMAND = re.compile(r"\bpython3?\s+(-m\s+[A-Za-z_][\w.]*|[\w./-]+\.py)\b")


def _code(text: str) -> list[str]:
    """The fenced code blocks and inline code spans of a markdown page."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`([^`]+)`", prose)  # an inline span may continue on the next line


def shown_commands() -> list[str]:
    """Each distinct `python -m MODULE` or `python path/to/script.py` in the pages' code."""
    found = set()
    for page in PAGES:
        with open(page) as f:
            for code in _code(f.read()):
                found.update(" ".join(m.split()) for m in COMMAND.findall(code))
    return sorted(found)


def _leaves(config, prefix: str = "") -> list[str]:
    """Every dotted field of `config`, walked here rather than by the generator under test."""
    names = []
    for key, value in config.items():
        names += _leaves(value, f"{prefix}{key}.") if hasattr(value, "items") else [f"{prefix}{key}"]
    return names


def module_map() -> set[str]:
    """The module paths (t2ijax/...) the tree in docs/architecture.md's "Module map" lists: a line that
    starts with `name/` opens a directory inside the one above it by indentation."""
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        section = f.read().split("## Module map", 1)[1].split("\n## ", 1)[0]
    tree = re.search(r"```\n(.*?)```", section, re.S).group(1)
    listed, stack = set(), []  # stack of (indent, directory)
    for line in tree.splitlines():
        indent, first = len(line) - len(line.lstrip()), (line.split() or [""])[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if first.endswith("/"):
            stack.append((indent, (stack[-1][1] if stack else "") + first))
        directory = stack[-1][1] if stack else ""
        listed.update(directory + name for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", line))
    return listed


def test_module_map_lists_every_module():
    modules = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "t2ijax", "**", "*.py"), recursive=True)
               if not p.endswith("__init__.py")}
    missing = sorted(modules - module_map())
    assert not missing, f"add these to the Module map of docs/architecture.md: {missing}"


def test_configuration_reference_is_current():
    with open(REFERENCE) as f:
        committed = f.read()
    assert committed == config_reference.render(), \
        "docs/configuration.md is stale: python -m t2ijax.config_reference > docs/configuration.md"


def test_configuration_reference_names_every_field_with_its_comment():
    text = config_reference.render()
    missing = [name for name in _leaves(base.get_config()) if f"| `{name}` |" not in text]
    assert not missing, missing
    # Comments are read from base.py's source: a field's own, one that continues on the next line,
    # a section's, and the registries' names.
    assert re.search(r"\| `diffusion.prediction` \| `'velocity'` \| `epsilon`, `v`, `velocity`, `x0` \| what the "
                     r"network outputs", text)
    assert "or \"none\": one zero token per caption (no text) |" in text
    assert "Mesh axis sizes; -1 takes the remaining devices." in text
    assert re.search(r"\| `init_from` \| `''` \| str \| A diffusers PRX transformer", text)  # a comment above


def test_the_pages_show_the_main_commands():
    commands = shown_commands()
    assert {"-m t2ijax.main", "-m t2ijax.sample", "-m t2ijax.evaluate", "-m t2ijax.ablate"} <= set(commands), commands


@pytest.mark.parametrize("command", shown_commands())
def test_every_shown_command_exists(command):
    args = command.split()
    if args[0] != "-m":
        assert os.path.isfile(os.path.join(REPO, args[0])), f"{args[0]} is shown in the docs but does not exist"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    # absl prints its flags and exits 1 after --help; argparse exits 0 after its usage.
    printed_help = "Try --helpfull" in result.stdout or (result.returncode == 0 and "usage" in result.stdout.lower())
    assert printed_help and result.returncode in (0, 1), f"python {command} --help failed:\n{result.stderr[-2000:]}"
