"""One config per ablation axis: VARIANTS maps a variant name to its overrides of the CPU demo."""
import ml_collections

from configs import shapes_tiny
from t2ijax.config import apply_overrides
from t2ijax.errors import ConfigError


def variant_config(variants: dict[str, dict], name: str) -> ml_collections.ConfigDict:
    """configs/shapes_tiny.py with the overrides (dotted field -> value) of variant `name`."""
    if name not in variants:
        raise ConfigError(f"unknown variant '{name}'; the variants are: {', '.join(variants)}")
    config = shapes_tiny.get_config()
    apply_overrides(config, variants[name], f"variant '{name}'")
    return config
