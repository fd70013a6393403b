"""The cache step: dataset splits plus cached caption embeddings, ready for the loader."""
import dataclasses
import os

import ml_collections
import numpy as np

from t2ijax.data.sources import load_split
from t2ijax.data.text_cache import TextCache

ATTRIBUTE_KEYS = ("num_objects", "shape", "colour", "size", "position", "background")


@dataclasses.dataclass
class PreparedData:
    train: dict[str, np.ndarray]          # image, text, text_mask
    validation: dict[str, np.ndarray]     # image, text, text_mask, caption, and attributes if any
    null_text: np.ndarray                 # [L, D] embedding of the empty caption
    null_mask: np.ndarray                 # [L]
    negative_text: np.ndarray             # [L, D] embedding of config.sampler.negative_prompt
    negative_mask: np.ndarray             # [L]
    prompts: dict[str, np.ndarray]        # caption, text, text_mask of config.sample.prompts


def text_cache_dir(data_cfg: ml_collections.ConfigDict) -> str:
    return os.path.join(data_cfg.data_dir, "text_cache")


def prepare(config: ml_collections.ConfigDict, mesh=None, rules=None) -> PreparedData:
    """Builds what is missing (dataset, caption embeddings) and loads everything into memory.

    Runs the text encoder (its parameters sharded over `mesh` when given) only for captions not
    cached yet: dataset captions, the empty caption, the sample prompts and the negative prompt;
    training itself never does.
    """
    cache = TextCache(text_cache_dir(config.data), config.text, mesh, rules)

    def with_text(split: dict[str, np.ndarray], keep: tuple[str, ...]) -> dict[str, np.ndarray]:
        captions = split[config.data.caption_field]
        text, mask = cache.lookup(captions)
        out = {"image": split["image"], "text": text, "text_mask": mask, "caption": captions}
        out.update({k: split[k] for k in keep if k in split})
        return out

    train = with_text(load_split(config.data, "train"), keep=())
    del train["caption"]
    validation = with_text(load_split(config.data, "validation"), keep=ATTRIBUTE_KEYS)
    null_text, null_mask = cache.lookup([""])
    negative_text, negative_mask = cache.lookup([config.sampler.negative_prompt])
    prompts = list(config.sample.prompts)
    prompt_text, prompt_mask = cache.lookup(prompts)
    cache.release_encoder()
    return PreparedData(train=train, validation=validation, null_text=null_text[0], null_mask=null_mask[0],
                        negative_text=negative_text[0], negative_mask=negative_mask[0],
                        prompts={"caption": np.asarray(prompts, object), "text": prompt_text,
                                 "text_mask": prompt_mask})


def images_to_model_space(images: np.ndarray, autoencoder) -> np.ndarray:
    """uint8 pixels -> [-1, 1] floats -> the autoencoder's space."""
    return autoencoder.encode(images.astype(np.float32) / 127.5 - 1.0).mode()
