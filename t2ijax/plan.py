"""Plan a run's memory, compute and communication without its hardware: the full train step compiled
ahead of time for N (fake CPU) devices, with per-device memory, FLOPs and collectives (each kind's count
and bytes beside the ideal for the mesh, what they move, unexpected traffic flagged, and their time at
v5e, v5p, v6e and H100 bandwidth beside the FLOPs' time; docs/scaling.md).

  python -m t2ijax.plan --config=configs/prx_small.py --devices=64 --mesh=fsdp:64
      [--hosts=16] [--slices=2] [--batch=256] [--remat=dots] [--json=plan.json] [--config.model.depth=24 ...]

--mesh names axis sizes (data, fsdp, tensor; "fsdp:4,tensor:2"), the others are 1; without it
config.mesh is used. With --slices=N the devices form N equal slices (multislice TPU): --mesh (or
config.mesh) lays out one slice and config.dcn_mesh the slices (default: data across them), and the
report adds the part of the collectives that goes between slices, over the data-center network.
Parameter, optimizer-state and batch bytes follow from the shardings exactly; temporaries come
from the CPU compiler, which fuses and lays out differently from TPU and GPU compilers, so treat
them as an estimate (docs/scaling.md).
"""
import dataclasses
import json
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax.cli import loaded_config, parse_flags, quiet_libraries
from t2ijax.registry import names

flags.DEFINE_integer("devices", None, "Number of devices to plan for.", required=True)
flags.DEFINE_string("mesh", "", "Mesh axis sizes, e.g. fsdp:64 or data:2,fsdp:16,tensor:2; default config.mesh.")
flags.DEFINE_integer("hosts", 1, "Processes the devices will be spread over (checks each host's batch share).")
flags.DEFINE_integer("slices", 1, "Slices the devices form (multislice TPU); config.mesh is one slice's mesh.")
flags.DEFINE_integer("batch", None, "Global batch size (default config.data.global_batch_size).")
flags.DEFINE_enum("remat", None, list(names("model.remat_policy")),
                  "Remat policy of the transformer blocks (default config.model.remat_policy).")
flags.DEFINE_string("json", "", "Also write the numbers to this JSON file.")
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).", lock_config=True)
FLAGS = flags.FLAGS


def parse_mesh(text: str) -> dict[str, int]:
    """"fsdp:4,tensor:2" (or "fsdp:4xtensor:2") -> {"data": 1, "fsdp": 4, "tensor": 2}."""
    from t2ijax.errors import ConfigError
    from t2ijax.sharding import MESH_AXES

    sizes = dict.fromkeys(MESH_AXES, 1)
    for part in filter(None, re.split(r"[,x×\s]+", text)):
        axis, _, size = part.partition(":")
        if axis not in MESH_AXES or not size.isdigit() or int(size) < 1:
            raise ConfigError(f"--mesh={text!r}: each part is AXIS:SIZE with AXIS one of {', '.join(MESH_AXES)} "
                              "and SIZE a positive integer, e.g. --mesh=fsdp:4,tensor:2")
        sizes[axis] = int(size)
    return sizes


def main(argv):
    quiet_libraries()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    # Before anything touches a device: N CPU devices stand in for the accelerators.
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", FLAGS.devices)
    from t2ijax.benchmarks.planning import plan, report
    from t2ijax.config import validate
    from t2ijax.errors import ConfigError
    from t2ijax.models.text.packaged import check as check_installed, describe

    config = loaded_config(FLAGS.config)
    try:
        check_installed(config)
        if FLAGS.mesh:
            config.mesh.update(parse_mesh(FLAGS.mesh))
        if FLAGS.batch is not None:
            config.data.global_batch_size = FLAGS.batch
        if FLAGS.remat is not None:
            config.model.remat_policy = FLAGS.remat
        if FLAGS.hosts < 1 or FLAGS.devices % FLAGS.hosts:
            raise ConfigError(f"--hosts={FLAGS.hosts} must divide --devices={FLAGS.devices} (each host has as many)")
        validate(config, FLAGS.devices, FLAGS.hosts, platform="cpu", num_slices=FLAGS.slices, shapes_only=True)
        result = plan(config, FLAGS.slices)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(report(result))
    print(f"install: the config {describe(config)}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(dict(dataclasses.asdict(result), peak_bytes=result.peak_bytes,
                           flops_per_image=result.flops_per_image), f, indent=2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
