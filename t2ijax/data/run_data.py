"""What a run reads besides its training stream: the records' manifest, latent space, validation examples
and the embeddings of the empty caption, the negative prompt and the sample prompts."""
import dataclasses

import ml_collections
import numpy as np
from absl import logging

from t2ijax.data import manifest, pipeline, write_records
from t2ijax.data.buckets import Size
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import PIXEL_SPACE, load_autoencoder
from t2ijax.models.autoencoders.latent_space import LatentSpace


@dataclasses.dataclass
class RunData:
    directory: str                        # the records
    manifest: dict
    space: LatentSpace                    # what the denoiser's inputs are, at config.data.resolution
    validation: dict[str, np.ndarray]     # image, (latent,) text, text_mask, caption, and attributes if any
    validation_at: dict[Size, dict[str, np.ndarray]]  # the same at each of config.eval.sizes
    null_text: np.ndarray                 # [L, D] embedding of the empty caption
    null_mask: np.ndarray                 # [L]
    negative_text: np.ndarray             # [L, D] embedding of config.sampler.negative_prompt
    negative_mask: np.ndarray             # [L]
    prompts: dict[str, np.ndarray]        # caption, text, text_mask of config.sample.prompts

    def space_at(self, resolution: int) -> LatentSpace:
        return write_records.latent_space(self.space.autoencoder, self.manifest["latents"][str(resolution)])


def text_embeddings(config: ml_collections.ConfigDict, directory: str, found: dict,
                    texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, L, D] embeddings and mask of `texts`: those preprocessing wrote, else encoded now."""
    stored = {r["caption"]: r for r in pipeline.read_set(directory, found, write_records.TEXTS_SET)}
    missing = [t for t in dict.fromkeys(texts) if t not in stored]
    if missing:
        logging.info("encoding %d prompts the records do not hold", len(missing))
        stored.update((r["caption"], r) for r in write_records.text_examples(write_records.Encoders(config), missing))
    tokens = [stored[t]["text"] for t in texts]
    text, mask = pipeline.pad_text(tokens, found["max_length"], found["text_dim"], np.float32)
    return text, mask


def validation_examples(config: ml_collections.ConfigDict, directory: str, found: dict,
                        name: str) -> dict[str, np.ndarray]:
    """The first validation examples of set `name`, as many as evaluation uses (its loss, prompts and
    reference images), as arrays."""
    used = max(config.eval.loss_examples, config.eval.num_samples, config.eval.reference_examples)
    examples = pipeline.read_set(directory, found, name, config.data.bad_records == "skip", count=used)
    text, mask = pipeline.pad_text([e["text"] for e in examples], found["max_length"], found["text_dim"],
                                   np.float32)
    out = {"image": np.stack([pipeline.decode_png(e["image"]) for e in examples]), "text": text, "text_mask": mask,
           "caption": np.asarray([e["caption"] for e in examples], object)}
    if "latent" in examples[0]:
        out["latent"] = np.stack([e["latent"] for e in examples]).astype(np.float32)
    for key in write_records.ATTRIBUTE_KEYS:
        if key in examples[0]:
            out[key] = np.stack([e[key] for e in examples])
    return out


def missing_sets(found: dict, config: ml_collections.ConfigDict) -> list[str]:
    """The sets the config needs that the records lack (each phase's resolution, the evaluation sizes)."""
    from t2ijax.training import phases

    resolution = config.data.resolution
    sizes = [(resolution, resolution), *(tuple(s) for s in config.eval.sizes)]
    missing = [name for name in (manifest.set_name("validation", resolution, s) for s in sizes)
               if name not in found["sets"]]
    return missing + [f"train/{p.resolution}" for p in phases.phases(config)
                      if str(p.resolution) not in found["latents"]]


def run_space(config: ml_collections.ConfigDict) -> LatentSpace:
    """The run's latent space: pixel space's fixed one, else the normalization its records were made with."""
    autoencoder = load_autoencoder(config.autoencoder.name)
    if config.autoencoder.name == PIXEL_SPACE:
        return write_records.latent_space(autoencoder, write_records.latent_statistics(None, None, config))
    _, found = manifest.load_checked(config)
    return write_records.latent_space(autoencoder, found["latents"][str(config.data.resolution)])


def open_run_data(config: ml_collections.ConfigDict, build: bool = True) -> RunData:
    """The run's records, written first (by every process, each its share) when they are missing or lack a set
    the config needs. Commands that read a finished run pass build=False: they add what is missing to records
    that exist (an evaluation size), and never preprocess from nothing (a one-line error says where they looked)."""
    found = manifest.read(manifest.records_dir(config))
    if (build or found is not None) and (found is None or missing_sets(found, config)):
        write_records.write(config)
    directory, found = manifest.load_checked(config)
    missing = missing_sets(found, config)
    if missing:
        raise ConfigError(f"records at {directory} lack {missing[0]} (the config's resolutions or eval.sizes); run "
                          f"`python -m t2ijax.preprocess` with this config and --out={directory} to add it")
    autoencoder = load_autoencoder(config.autoencoder.name)
    if autoencoder.fingerprint != found["autoencoder_fingerprint"]:
        raise ConfigError(f"records at {directory} were made with autoencoder {found['autoencoder_fingerprint']}, "
                          f"config.autoencoder.name={config.autoencoder.name!r} is {autoencoder.fingerprint} (other "
                          "weights); preprocess again into another --out")
    resolution = config.data.resolution
    square = (resolution, resolution)
    at = lambda size: validation_examples(config, directory, found,  # noqa: E731
                                          manifest.set_name("validation", resolution, size))
    prompts = list(config.sample.prompts)
    text, mask = text_embeddings(config, directory, found, ["", config.sampler.negative_prompt, *prompts])
    logging.info("records: %s (%s)", directory, ", ".join(f"{n} {s['count']}" for n, s in sorted(found["sets"].items())
                                                          if n.startswith("train/")))
    return RunData(directory=directory, manifest=found,
                   space=write_records.latent_space(autoencoder, found["latents"][str(resolution)]),
                   validation=at(square),
                   validation_at={tuple(s): at(tuple(s)) for s in config.eval.sizes},
                   null_text=text[0], null_mask=mask[0], negative_text=text[1], negative_mask=mask[1],
                   prompts={"caption": np.asarray(prompts, object), "text": text[2:], "text_mask": mask[2:]})


def training_sets(found: dict, resolution: int, grid,
                  global_batch_size: int) -> tuple[list[str], dict]:
    """The phase's record sets in the grid's order, without buckets smaller than one global batch, and
    the build report with those left out."""
    report = dict(found["report"][str(resolution)])
    names = [manifest.set_name("train", resolution, s) for s in grid]
    present = [n for n in names if n in found["sets"]]
    small = {n: found["sets"][n]["count"] for n in present if found["sets"][n]["count"] < global_batch_size}
    if small:
        logging.warning("%d training images in %d bucket(s) smaller than the global batch (%d) are left out: %s",
                        sum(small.values()), len(small), global_batch_size,
                        ", ".join(f"{n.rsplit('/', 1)[1]}: {c}" for n, c in small.items()))
        report["left_out_small_buckets"] = {n.rsplit("/", 1)[1]: c for n, c in small.items()}
    kept = [n for n in present if n not in small]
    if not kept:
        raise ConfigError(f"no bucket holds a global batch ({global_batch_size}) of training images; lower "
                          "data.global_batch_size or add images")
    return kept, report
