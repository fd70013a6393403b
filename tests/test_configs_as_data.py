"""configs/ is data next to the code: `pip install .` installs t2ijax alone (no top-level `configs`
package), and every config file under configs/ loads by its path from any working directory, its
`from configs import ...` lines included (t2ijax.config.load_config, which --config uses too)."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pip_install_puts_no_top_level_configs_package(tmp_path):
    pytest.importorskip("setuptools")  # built here without build isolation: no index is reached
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
    source.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), source)
    for folder in ("t2ijax", "configs"):
        shutil.copytree(os.path.join(REPO, folder), source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
                    str(source)], check=True, capture_output=True)
    (top_level,) = glob.glob(str(target / "t2ijax-*.dist-info" / "top_level.txt"))
    with open(top_level) as f:
        assert f.read().split() == ["t2ijax"]
    installed = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert installed == ["t2ijax"]


def test_every_config_loads_by_path_from_any_working_directory(tmp_path):
    files = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)
                   if os.path.basename(p) != "__init__.py")
    assert len(files) > 20
    # t2ijax importable from a folder that holds it alone: the repository is not on the path.
    (tmp_path / "code").mkdir()
    os.symlink(os.path.join(REPO, "t2ijax"), tmp_path / "code" / "t2ijax")
    probe = ("import json, sys\n"
             "from t2ijax.config import load_config\n"
             "names = {p: load_config(p).model.name for p in json.loads(sys.argv[1])}\n"
             "print(json.dumps([names, list(sys.modules['configs'].__path__)]))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "code")}
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(files)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    names, configs_path = json.loads(out.stdout)
    assert sorted(names) == files and all(names.values())
    assert configs_path == [os.path.join(REPO, "configs")]  # this checkout's configs/, by path
