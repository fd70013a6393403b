"""The docs stay true: docs/configuration.md is current and names every field of configs/base.py, and
every command that README.md and docs/ show exists (its --help runs)."""
import glob
import os
import re
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

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
    listed = {path for path in module_map() if path.startswith("t2ijax/")}
    missing, stale = sorted(modules - listed), sorted(listed - modules)
    assert not missing, f"add these to the Module map of docs/architecture.md: {missing}"
    assert not stale, f"the Module map of docs/architecture.md lists modules that are gone: {stale}"


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


# A figure: a number not inside a name (t2ijax, bf16, x0, v5e), thousands separators dropped.
FIGURE = re.compile(r"(?<![A-Za-z_\d.])\d+(?:\.\d+)?")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def _figures(text: str) -> set[Decimal]:
    return {Decimal(x) for x in FIGURE.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))}


def _quoted(figure: Decimal, source: set[Decimal]) -> bool:
    """`figure` is one of `source`'s numbers, given to its own number of decimals (0.47 quotes 0.473)."""
    return any(x.quantize(figure, rounding=ROUND_HALF_UP) == figure for x in source)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _section(page: str, anchor: str) -> str:
    """The text under the heading whose anchor is `anchor` (to the next heading of its level or above);
    the whole page without an anchor."""
    with open(page) as f:
        text = f.read()
    if not anchor:
        return text
    lines = text.splitlines()
    headings = [(i, len(m.group(1))) for i, line in enumerate(lines) if (m := re.match(r"(#+) ", line))]
    for k, (i, level) in enumerate(headings):
        if _anchor(lines[i].lstrip("#")) == anchor:
            end = next((j for j, lvl in headings[k + 1:] if lvl <= level), len(lines))
            return "\n".join(lines[i:end])
    raise AssertionError(f"{os.path.relpath(page, REPO)} has no section #{anchor}")


def _dated_headings(page: str) -> set[str]:
    with open(page) as f:
        return set(re.findall(r"^#+ .*?(\d{4}-\d\d-\d\d)", f.read(), re.M))


def _results_claims() -> list[str]:
    """docs/results.md's table rows and paragraphs, each a claim with its own links."""
    with open(os.path.join(REPO, "docs", "results.md")) as f:
        blocks = f.read().split("\n\n")
    return [line for block in blocks for line in
            (block.splitlines() if block.lstrip().startswith("|") else [" ".join(block.split())])
            if not re.fullmatch(r"[|\-\s]*", line)]


def test_every_figure_in_results_is_on_the_page_it_links():
    """Each figure of docs/results.md (a table row or paragraph with numbers) is found, to its own decimals, in
    the page or section that the same row or paragraph links to; a page that keeps runs of several dates
    (benchmarks.md) is linked at the section. A source page rewritten with new numbers cannot leave an old
    figure here."""
    docs, problems = os.path.join(REPO, "docs"), []
    for claim in _results_claims():
        prose = re.sub(r"`[^`]*`", "", LINK.sub("", claim))  # page names and code are not figures
        figures = _figures(prose)
        sources = [target for _, target in LINK.findall(claim) if not target.startswith("http")]
        if figures and not sources:
            problems.append(f"figures without a link to their source page: {claim[:120]}")
        elif figures:
            found = set()
            for target in sources:
                page, _, anchor = target.partition("#")
                if not anchor and len(_dated_headings(os.path.join(docs, page))) > 1:
                    problems.append(f"{page} keeps runs of several dates: link the section the figures come from, "
                                    f"not the page: {claim[:120]}")
                found |= _figures(_section(os.path.join(docs, page), anchor))
            stale = sorted(str(figure) for figure in figures if not _quoted(figure, found))
            if stale:
                problems.append(f"{stale} are not in {sources}: {claim[:160]}")
    assert not problems, "docs/results.md:\n" + "\n".join(problems)
