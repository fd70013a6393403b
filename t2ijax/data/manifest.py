"""What a records directory holds and what made it: `manifest.json`, written last by preprocessing.

`made_with` is every setting the records' bytes depend on (dataset, caption fields and augmentation,
text encoder, storage dtypes, autoencoder and latent normalization, whether images are kept); a run
whose config asks for other records is refused before anything compiles. `sets` maps each record set,
"<split>/<resolution>/<H>x<W>", to its shards and their counts; `latents` holds each resolution's
normalization (offset, scale) and channel statistics; `report` what the build kept and left out.
"""
import hashlib
import json
import os

import ml_collections

from t2ijax import storage
from t2ijax.data import augmentation
from t2ijax.data.buckets import Size, size_name
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import PIXEL_SPACE
from t2ijax.models.build import pixel_multiple
from t2ijax.techniques.frozen import needs_images
from t2ijax.training import phases

MANIFEST = "manifest.json"
FORMAT = 1
_DATA_FIELDS = ("name", "num_train", "num_validation", "aspect_ratios", "max_pixels", "text_dtype", "latent_dtype")
_LATENT_FIELDS = ("normalization", "posterior", "stats_examples")
_GRID_FIELDS = ("min_aspect", "max_aspect", "token_tolerance")


def set_name(split: str, resolution: int, size: Size) -> str:
    return f"{split}/{resolution}/{size_name(size)}"


def made_with(config: ml_collections.ConfigDict) -> dict:
    """The settings records made for `config` depend on (JSON values, compared field by field)."""
    data = config.data
    asked = {f"data.{k}": data[k] for k in _DATA_FIELDS}
    asked["data.path"] = data.path
    asked["data.captions"] = [list(pair) for pair in data.captions]
    asked["data.augmentation"] = augmentation.settings(data)
    if config.resolution.buckets:  # which bucket an image joins depends on the whole grid
        asked["resolution.buckets"] = {k: config.resolution[k] for k in _GRID_FIELDS}
        asked["bucket_multiple"] = pixel_multiple(config)
    asked.update({f"text_encoder.{k}": v for k, v in config.text_encoder.items()})
    asked["autoencoder.name"] = config.autoencoder.name
    if config.autoencoder.name != PIXEL_SPACE:
        asked.update({f"latents.{k}": config.latents[k] for k in _LATENT_FIELDS})
    asked["images"] = config.autoencoder.name == PIXEL_SPACE or needs_images(config)
    return json.loads(json.dumps(asked))  # tuples as lists, as read back from the file


def records_key(config: ml_collections.ConfigDict) -> str:
    """Changes with made_with and with the source's files (a user dataset's fingerprint)."""
    from t2ijax.data.sources import source_fingerprint

    identity = [made_with(config), source_fingerprint(config.data)]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def records_dir(config: ml_collections.ConfigDict) -> str:
    """config.data.records, or the directory preprocessing writes this config's records to by default."""
    return config.data.records or os.path.join(config.data.data_dir, "records", records_key(config))


def needed_sets(config: ml_collections.ConfigDict) -> dict[str, tuple[str, int, tuple[Size, ...]]]:
    """{set name: (split, resolution, sizes)}: training sets per phase resolution (the bucket grid's sizes, one
    set per bucket, named by the grid) and validation sets at the run's resolution and config.eval.sizes."""
    from t2ijax.data import buckets

    wanted = {}
    for phase in phases.phases(config):
        phase_config = phases.phase_config(config, phase)
        wanted[("train", phase.resolution)] = tuple(buckets.grid(phase_config))
    resolution = config.data.resolution
    wanted[("validation", resolution)] = ((resolution, resolution), *(tuple(s) for s in config.eval.sizes))
    return {f"{split}/{res}": (split, res, sizes) for (split, res), sizes in wanted.items()}


def read(directory: str) -> dict | None:
    path = storage.resolve(directory) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write(directory: str, manifest: dict) -> None:
    path = storage.resolve(directory) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def check(manifest: dict, config: ml_collections.ConfigDict, directory: str) -> None:
    """Refuses records made with other settings than `config`'s, naming the first field that differs."""
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"records at {directory} are of format {manifest.get('format')}, this t2ijax reads "
                          f"{FORMAT}; preprocess again into another --out")
    asked, made = made_with(config), manifest["made_with"]
    for field in sorted(asked.keys() | made.keys()):
        if asked.get(field) != made.get(field):
            raise ConfigError(f"records at {directory} were made with {field}={made.get(field)!r}, the config asks "
                              f"{asked.get(field)!r}; run `python -m t2ijax.preprocess` with this config into another "
                              "--out and point data.records at it (or clear data.records)")


def load_checked(config: ml_collections.ConfigDict) -> tuple[str, dict]:
    """(records directory, manifest) of `config`, checked; a missing manifest is a one-line error."""
    directory = records_dir(config)
    manifest = read(directory)
    if manifest is None:
        raise ConfigError(f"no records at {directory} (no {MANIFEST}); write them with `python -m t2ijax.preprocess "
                          f"--config=<this config> --out={directory}`")
    check(manifest, config, directory)
    return directory, manifest
