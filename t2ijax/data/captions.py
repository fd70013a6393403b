"""Caption fields and their weights (config.data.captions = ((field, weight), ...)).

A split holds one object array of `str` per caption field. Training draws each example's caption per
epoch from the fields with the config's weights, a field whose caption is empty for that example
getting weight 0 (the loader draws; this module gives the weights); validation, evaluation and
everything else that needs one caption per example use the first field.
"""
import ml_collections
import numpy as np

from t2ijax.errors import ConfigError


def check_caption_weights(captions) -> None:
    """config.data.captions: (field, weight) pairs, fields unique, weights >= 0, one of them > 0."""
    pairs = tuple(captions)
    if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str)
                            and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) for p in pairs):
        raise ConfigError(f"config.data.captions={captions!r} must be (field, weight) pairs, e.g. "
                          "(('caption_long', 0.8), ('caption_short', 0.2))")
    fields = [field for field, _ in pairs]
    if len(set(fields)) != len(fields):
        raise ConfigError(f"config.data.captions names a field twice ({', '.join(fields)}); give each field once")
    if any(weight < 0 for _, weight in pairs):
        raise ConfigError(f"config.data.captions={captions!r} has a negative weight; weights must be >= 0")
    if not any(weight > 0 for _, weight in pairs):
        raise ConfigError(f"config.data.captions={captions!r}: every weight is 0; give at least one field a "
                          "positive weight")


def first_field(cfg: ml_collections.ConfigDict) -> str:
    """The caption field of validation and evaluation."""
    return cfg.captions[0][0]


def dataset_fields(split: dict[str, np.ndarray]) -> list[str]:
    """The caption fields of a split: its arrays of strings."""
    return sorted(k for k, v in split.items() if v.dtype == object)


def check_fields(cfg: ml_collections.ConfigDict, split: dict[str, np.ndarray]) -> None:
    """Every field config.data.captions names is one of the dataset's."""
    have = dataset_fields(split)
    missing = [field for field, _ in cfg.captions if field not in have]
    if missing:
        raise ConfigError(f"config.data.captions names {', '.join(missing)}, which dataset '{cfg.name}' lacks; "
                          f"its caption fields are: {', '.join(have)}")


def field_captions(cfg: ml_collections.ConfigDict, split: dict[str, np.ndarray]) -> np.ndarray:
    """object [N, F]: each example's caption in each field of config.data.captions."""
    check_fields(cfg, split)
    return np.stack([split[field] for field, _ in cfg.captions], axis=1)


def field_weights(cfg: ml_collections.ConfigDict, captions: np.ndarray) -> np.ndarray:
    """float32 [N, F] draw weights of `captions` [N, F]: the config's, 0 where a caption is empty; an example
    with no non-empty caption of positive weight keeps the config's (so it draws an empty caption)."""
    weights = np.asarray([weight for _, weight in cfg.captions], np.float32)
    nonempty = np.vectorize(lambda c: bool(str(c).strip()), otypes=[bool])(captions)
    drawn = weights * nonempty
    return np.where(drawn.sum(axis=1, keepdims=True) > 0, drawn, weights).astype(np.float32)
