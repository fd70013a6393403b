"""One config per ablation axis: VARIANTS maps a variant name to its overrides of a baseline config.

The baseline is the CPU demo (configs/shapes_tiny.py) unless the variant names another config in configs/
after an '@': `configs/ablations/path.py:vp_cosine@compose_tiny` is compose_tiny with vp_cosine's overrides
(`t2ijax.ablate --baseline=compose_tiny` runs a whole axis that way).
"""
import importlib

import ml_collections

from t2ijax.config import apply_overrides
from t2ijax.errors import ConfigError

DEFAULT_BASELINE = "shapes_tiny"


def baseline_config(name: str) -> ml_collections.ConfigDict:
    """The config of configs/<name>.py."""
    if not name.isidentifier():
        raise ConfigError(f"baseline '{name}' is not a config module name: name one in configs/, e.g. compose_tiny")
    try:
        module = importlib.import_module(f"configs.{name}")
    except ModuleNotFoundError:
        raise ConfigError(f"there is no configs/{name}.py to use as the baseline: name a config in configs/, "
                          "e.g. compose_tiny") from None
    if not callable(getattr(module, "get_config", None)) or hasattr(module, "VARIANTS"):
        raise ConfigError(f"configs.{name} is not a baseline config (no get_config, or an axis): name a training "
                          "config in configs/, e.g. compose_tiny")
    return module.get_config()


def variant_config(variants: dict[str, dict], name: str) -> ml_collections.ConfigDict:
    """The baseline config (`variant@baseline`, shapes_tiny by default) with the overrides of the variant."""
    variant, _, baseline = name.partition("@")
    variant = variant or next(iter(variants))
    if variant not in variants:
        raise ConfigError(f"unknown variant '{variant}'; the variants are: {', '.join(variants)}")
    config = baseline_config(baseline or DEFAULT_BASELINE)
    apply_overrides(config, variants[variant], f"variant '{variant}'")
    return config
