"""The smoke suite, the first thing to run on a new accelerator (docs/benchmarks.md): the config's train
step on random inputs at every size the run trains at (data.resolution, buckets and phases, in the
autoencoder's space, with config.bench's batch and caption shapes), each compiled, then timed steps at
data.resolution's square: step time, MFU, memory and the step's collectives."""
import dataclasses
import json
import subprocess
import sys

import jax
import ml_collections
from absl import logging

from t2ijax.benchmarks import collectives, replay
from t2ijax.benchmarks.compile import timed_compile
from t2ijax.benchmarks.memory import memory
from t2ijax.benchmarks.synthetic import Synthetic, check, synthetic
from t2ijax.benchmarks.timing import matmul_peak_flops
from t2ijax.benchmarks.train import train_suite
from t2ijax.models.autoencoders import geometry
from t2ijax.models.build import attention_for, attention_mismatch, num_image_tokens
from t2ijax.sharding import run_mesh
from t2ijax.training.phases import training_sizes


def smoke_config(config: ml_collections.ConfigDict, platform: str) -> tuple[ml_collections.ConfigDict, str | None]:
    """A copy of `config` whose bench inputs are data.resolution's square and whose attention is resolved for
    `platform` and every training size; a kernel the platform lacks (splash off TPUs, cuDNN off GPUs) becomes
    xla, with the reason (one line) returned and logged."""
    config = config.copy_and_resolve_references()
    fallback = attention_mismatch(config.model.attention_impl, platform)
    if fallback:
        fallback = f"{fallback}: the smoke suite runs xla attention instead"
        logging.warning("%s", fallback)
        config.model.attention_impl = "xla"
    config.model.attention_impl = attention_for(config, platform)
    channels, downsample = geometry(config.autoencoder.name)
    config.bench.update(latent_size=config.data.resolution // downsample, latent_channels=channels)
    return config, fallback


def _at_size(s: Synthetic, height: int, width: int) -> Synthetic:
    """`s` with an abstract batch of model-space height x width inputs (enough to lower the step)."""
    x0 = s.batch["x0"]
    resized = jax.ShapeDtypeStruct((x0.shape[0], height, width, x0.shape[3]), x0.dtype, sharding=x0.sharding)
    return dataclasses.replace(s, batch={**s.batch, "x0": resized})


def compile_per_shape(config: ml_collections.ConfigDict) -> tuple[list[dict], jax.stages.Compiled]:
    """Lower and compile seconds of the train step at each training size, and the compiled step at
    config.bench's square (whose collectives the suite measures)."""
    s = synthetic(config, materialize=False)
    _, downsample = geometry(config.autoencoder.name)
    resolution = config.data.resolution
    square, rows = None, []
    for height, width in sorted({*training_sizes(config), (resolution, resolution)}):
        side = (height // downsample, width // downsample)
        compiled, seconds = timed_compile(_at_size(s, *side).lowered_train_step)
        rows.append({"shape": [s.batch_size, *side, config.bench.latent_channels],
                     "image_tokens": num_image_tokens(config.model, *side), **seconds})
        if side == (config.bench.latent_size,) * 2:
            square = compiled
    return rows, square


# Substrings of jax's device_kind -> collectives.CHIPS's names, first match wins ('TPU v5 lite' is a v5e).
CHIP_KINDS = (("v5 lite", "v5e"), ("v5e", "v5e"), ("v6 lite", "v6e"), ("v6e", "v6e"), ("v5p", "v5p"),
              ("tpu v5", "v5p"), ("h100", "H100"))


def chip(device_kind: str) -> str | None:
    return next((name for pattern, name in CHIP_KINDS if pattern in device_kind.lower()), None)


def _collectives(compiled: jax.stages.Compiled, mesh: jax.sharding.Mesh, step_s: float, device_kind: str) -> dict:
    """The step's collectives per kind, their time replayed alone on `mesh`, and the chip's estimate."""
    found = collectives.parse(compiled.as_text())
    measured = replay.measure(mesh, found)
    name = chip(device_kind)
    return {"per_kind": collectives.summary(found), **measured,
            "measured_fraction_of_step": measured["measured_s_per_step"] / step_s,
            "estimated_s_per_step": collectives.estimate_seconds(found, name) if name else None,
            "estimate": f"{name}'s bandwidth, ring algorithms, nothing overlapped" if name
            else f"none: collectives.CHIPS has no bandwidth for {device_kind!r}"}


def cpu_plan_bytes(config: ml_collections.ConfigDict, devices: int) -> tuple[int | None, str]:
    """t2ijax.plan's estimate of the step's memory per device: XLA's plan from the CPU compiler for `devices`
    fake CPU devices, with xla attention (in a subprocess: jax's backends are fixed once it starts); or None
    and the subprocess's last line."""
    result = subprocess.run([sys.executable, "-m", "t2ijax.benchmarks.smoke", str(devices)], input=config.to_json(),
                            capture_output=True, text=True)
    if result.returncode:
        return None, f"planning on {devices} CPU devices failed: {(result.stderr.strip().splitlines() or [''])[-1]}"
    return int(result.stdout), f"the CPU compiler's plan on {devices} fake devices, xla attention"


def _planned_on_cpu(config_json: str, devices: int) -> int:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", devices)
    config = ml_collections.ConfigDict(json.loads(config_json))
    config.model.attention_impl = "xla"
    return memory(synthetic(config, materialize=False).lowered_train_step().compile())["planned_bytes"]


def _memory(config: ml_collections.ConfigDict, train: dict, platform: str) -> dict:
    peak = train["device_peak_bytes"]
    plan, how = (train["planned_bytes"], "this run's compiled step") if platform == "cpu" \
        else cpu_plan_bytes(config, jax.device_count())
    return {"device_peak_bytes": peak,
            "device_peak": "memory_stats()['peak_bytes_in_use'] of device 0 after the timed steps" if peak is not None
            else f"not available: the {platform} backend's memory_stats() gives no peak",
            "planned_bytes": train["planned_bytes"], "temp_bytes": train["temp_bytes"], "plan_bytes": plan,
            "plan": how}


def smoke_suite(config: ml_collections.ConfigDict, steps: int) -> dict:
    platform, device_kind = jax.default_backend(), jax.devices()[0].device_kind
    config, fallback = smoke_config(config, platform)
    check(config)
    compiled_shapes, square = compile_per_shape(config)
    peak = matmul_peak_flops(config.bench.matmul_size, config.model.dtype)
    train = train_suite(config, steps, peak, compiled=square)
    name = chip(device_kind)
    return {"backend": platform, "device_kind": device_kind, "chip": name, "devices": jax.device_count(),
            "mesh": dict(run_mesh(config).shape), "attention": config.model.attention_impl,
            "attention_fallback": fallback, "parameters": train["parameters"],
            "batch_size": config.bench.batch_size,
            "image_tokens": num_image_tokens(config.model, config.bench.latent_size, config.bench.latent_size),
            "step_ms": train["step_ms"], "images_per_s": train["images_per_s"],
            "model_flops_per_step": train["model_flops_per_step"], "matmul_peak_gflops_per_device": peak / 1e9,
            "mfu": train["mfu"],
            "mfu_vs_chip_peak": train["model_gflops_per_s"] * 1e9 / (collectives.CHIPS[name].flops * jax.device_count())
            if name else None,
            # a persistent compilation cache (jax's, or a training run's) would make compile_s a cache read
            "compile": compiled_shapes, "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
            "memory": _memory(config, train, platform),
            "collectives": _collectives(square, run_mesh(config), train["step_ms"] / 1e3, device_kind)}


if __name__ == "__main__":  # cpu_plan_bytes's subprocess: the config as JSON on stdin, the device count
    print(_planned_on_cpu(sys.stdin.read(), int(sys.argv[1])))
