"""Shared fixtures: a tiny config over a tiny synthetic dataset built once per session."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Compiled programs are shared across tests, workers and the subprocesses tests start.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Tests run each program a few times, so compile time is most of the suite's time. Compiling without LLVM's
# optimizations halves it (the tiny config's train step 33 s -> 14 s), and XLA's loop emitters instead of its
# fusion emitters halve it again (a train step with TREAD, Muon and EMA 4.8 s -> 2.2 s; tests/test_uvit.py and
# test_prx.py 73 s -> 49 s), and one LLVM module a program instead of several saves another 10 % on 2 cores.
# None changes what a program computes beyond float rounding, but two programs that differ only in ops with no
# effect may round differently: compare such pairs to a tolerance.
os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0 "
                           "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1").strip()

# Tests are compile-bound, and one malloc arena (t2ijax/host_memory.py) slows XLA's multithreaded compiler: the tests
# and every command they start keep glibc's defaults (tests/test_host_memory.py checks the tuned setting).
os.environ.setdefault("T2IJAX_MALLOC", "system")

from configs import shapes_tiny


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; run first, so that pytest-xdist does not leave it for last")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order


def env_with_devices(devices: int, **extra: str) -> dict[str, str]:
    """The environment of a subprocess whose jax sees `devices` CPU devices (and the tests' XLA flags)."""
    return dict(os.environ, XLA_FLAGS=f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}",
                **extra)


def printed_json(script: str, devices: int, marker: str, timeout: int = 1200):
    """Runs `script` (python -c) in the repository with `devices` CPU devices and returns the JSON it printed
    after `marker` on its last such line; fails the test with the script's output tails if it fails."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env_with_devices(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith(marker)][-1][len(marker):])


def error_line(proc) -> str:
    """The one 'error: ' line of a command that failed (`proc`: a finished subprocess.run), with no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def tiny_config(data_dir: str):
    """The default config shrunk to compile and run in seconds on one CPU core."""
    c = shapes_tiny.get_config()
    c.data.update(data_dir=data_dir, num_train=256, num_validation=64, global_batch_size=8)
    c.model.update(hidden_size=32, depth=2, num_heads=2)
    c.text_encoder.max_length = 16
    c.total_steps = 6
    c.optim.warmup_steps = 2
    c.checkpoint.every_steps = 3
    c.log.every_steps = 3
    c.sample.update(every_steps=0, prompts=c.sample.prompts[:2])
    c.sampler.steps = 3
    c.eval.update(num_samples=8, loss_examples=16, batch_size=8)
    return c


def assert_examples_repeat(example, splits, count: int) -> None:
    """`example(split, index, 32)` gives the same arrays every call, for the first `count` indices of each split."""
    for split in splits:
        for i in range(count):
            a, b = example(split, i, 32), example(split, i, 32)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def denoiser_inputs(batch: int, size: tuple[int, int], channels: int, length: int, width: int, seed: int = 0,
                    padded: tuple[int, ...] = (3, 1)):
    """Random (x NHWC, t, text, text_mask) for a denoiser; example i + 1 keeps its first padded[i] text tokens."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *size, channels)).astype(np.float32)
    t = rng.uniform(size=batch).astype(np.float32)
    text = rng.standard_normal((batch, length, width)).astype(np.float32)
    mask = np.ones((batch, length), bool)
    for i, kept in enumerate(padded):
        mask[i + 1, kept:] = False
    return x, t, text, mask


def block_calls(model, params, inputs, block_types, entry, **kwargs):
    """One jitted forward of `model`: for each call of a block of `block_types`, in running order, `entry(block
    params, the call's args, its output)`, and what the model sowed into "intermediates"."""
    import flax.linen as nn
    import jax

    def run(params, *inputs):
        calls = []

        def record(next_fun, args, kw, context):
            out = next_fun(*args, **kw)
            if isinstance(context.module, block_types) and context.method_name == "__call__":
                calls.append(entry(context.module.variables["params"], args, out))
            return out

        with nn.intercept_methods(record):
            _, variables = model.apply({"params": params}, *inputs, mutable=["intermediates"], **kwargs)
        return calls, variables.get("intermediates", {})

    return jax.jit(run)(params, *inputs)


def assert_blocks_ran(calls, params, names):
    """Each recorded block call (its params first) ran on the params of the block named, in that order."""
    import jax

    assert len(calls) == len(names)
    for (block_params, *_), name in zip(calls, names, strict=True):
        assert jax.tree.all(jax.tree.map(np.array_equal, block_params, params[name])), name


def saved_randomized(model, directory):
    """A transformers/diffusers torch model with random values everywhere (their inits set norms and layer
    scales to constants), saved with save_pretrained; returns the model."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.2)
    model.eval().save_pretrained(directory)
    return model


@pytest.fixture(scope="session")
def gcs():
    """The URL of a GCS emulator on 127.0.0.1 (tests/gcs_emulator.py) running for the session, with every
    client in this process pointed at it; subprocesses inherit os.environ. Buckets: gcs_emulator.create_bucket."""
    import gcs_emulator

    with gcs_emulator.serve() as url, pytest.MonkeyPatch.context() as patch:
        for name, value in gcs_emulator.client_env(url).items():
            patch.setenv(name, value)
        yield url


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory):
    """A two-level (2x) autoencoder with 2 latent channels trained for a few steps: (result, config, workdir).
    One per session: the tests that use it share its training time and its records."""
    from t2ijax.models.autoencoders.training import train_autoencoder

    c = tiny_config(data_dir)
    c.latents.stats_examples = 128
    c.autoencoder_training.update(block_out_channels=(4, 8), norm_num_groups=4, latent_channels=2, steps=3,
                                  batch_size=4)
    workdir = str(tmp_path_factory.mktemp("autoencoder"))
    return train_autoencoder(c, workdir), c, workdir


@pytest.fixture(scope="session")
def run_workdir(data_dir, tmp_path_factory) -> str:
    """A run directory of tiny_config with an (untrained) checkpoint at step 0."""
    from t2ijax.training.loop import Run

    directory = str(tmp_path_factory.mktemp("run"))
    run = Run(tiny_config(data_dir), directory).setup()
    run.checkpointer.save(run.state, run.counters)
    run.close()
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    """A random one-layer CLIP image tower with projection, saved by transformers."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=28, patch_size=7, projection_dim=16)
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def uninterrupted(data_dir, tmp_path_factory):
    """`uninterrupted(processes)`: tests/test_fault_tolerance.py's training command run once to the end
    on `processes` processes (4 devices in all). The reference that killed-and-resumed runs must match
    bit for bit, and that tests/test_multihost.py compares across the two topologies."""
    from t2ijax.data import write_records
    from test_fault_tolerance import Launch

    # The records written here, once: every launch (killed or not, 1 or 2 processes) then only reads them.
    write_records.write(tiny_config(data_dir))
    finished = {}

    def run(processes: int):
        if processes not in finished:
            directory = tmp_path_factory.mktemp(f"uninterrupted_{processes}_processes")
            launch = Launch(directory, data_dir, directory / "workdir", processes)
            assert launch.run() == [0] * processes, launch.log[-3000:]
            finished[processes] = launch
        return finished[processes]

    return run


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> str:
    """A tiny random DINOv2 saved by transformers: the mechanics need a teacher, not a good one."""
    import torch
    import transformers

    directory = str(tmp_path_factory.mktemp("dinov2"))
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, patch_size=4, image_size=32)
    transformers.Dinov2Model(config).save_pretrained(directory)
    return directory
