"""Turn a dataset into training records: what training, evaluation and sampling read.

  python -m t2ijax.preprocess --config=configs/shapes_tiny.py --out=data/records/shapes_tiny

Reads config.data's source (shapes, image_folder, webdataset, parquet), converts, filters and buckets
it (in this process, or as a TFDS Apache Beam build with --config.data.beam_runner), encodes every
caption with config.text_encoder and every image with config.autoencoder, and writes ArrayRecord shards
per (split, resolution, bucket) and a manifest.json under --out (default: where training looks,
<data_dir>/records/<key>). Run it on every host of a job like training (each process writes its share
of the shards); a killed run, rerun, writes only the shards that are missing. Train on the result with
--config.data.records=<out>.
"""
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax import host_memory
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

config_flags.DEFINE_config_file("config", None, "Config file (see configs/).", lock_config=True)
flags.DEFINE_string("out", None, "Where the records go (default: config.data.records, else "
                    "<data_dir>/records/<key of the config's data, text encoder and latents>).")
FLAGS = flags.FLAGS


def summary(directory: str, manifest: dict) -> str:
    sets = ", ".join(f"{name} {s['count']}" for name, s in sorted(manifest["sets"].items()))
    return f"records: {directory}\n  sets: {sets}\n  made with: {json.dumps(manifest['made_with'])}"


def main(argv):
    quiet_libraries()
    host_memory.tune_for_cpu()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    from t2ijax.config import validate
    from t2ijax.data import write_records
    from t2ijax.errors import ConfigError, DistributedError
    from t2ijax.interop.finetune import resolve_init_from
    from t2ijax.sharding import initialize_distributed

    config = loaded_config(FLAGS.config)
    if FLAGS.out:
        config.data.records = FLAGS.out  # checked with the config's other paths
    try:
        initialize_distributed(config.distributed)
        resolve_init_from(config)
        validate(config, jax.device_count(), jax.process_count())
        directory, manifest = write_records.write(config)
    except DistributedError as e:  # a lost peer: leave without jax's shutdown, which would wait for it
        print(f"error: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0:
        print(summary(directory, manifest))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
