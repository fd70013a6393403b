"""Throughput measurements behind `python -m t2ijax.bench` (the command line and its flags live there)."""
import os
import platform
import tempfile
import time


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu} ({os.cpu_count()} cores), {jax.device_count()} x {jax.devices()[0].device_kind}"


def images_per_second(step_fn, steps: int, batch_size: int) -> float:
    import jax

    jax.block_until_ready(step_fn(0))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        out = step_fn(step)
    jax.block_until_ready(out)
    return steps * batch_size / (time.perf_counter() - start)


def data_suite(config, steps: int) -> dict:
    from t2ijax.train import Run

    with tempfile.TemporaryDirectory() as workdir:
        run = Run(config, workdir).setup()
        batch_size = config.data.global_batch_size
        loader = images_per_second(run.device_batch, steps, batch_size)
        state, batch = run.state, run.device_batch(0)

        def train_step(_):
            nonlocal state
            state, metrics = run.train_step(state, batch)
            return metrics

        step = images_per_second(train_step, steps, batch_size)
        run.checkpointer.close()
    return {"loader_images_per_s": round(loader, 1), "train_step_images_per_s": round(step, 1),
            "headroom": round(loader / step, 1), "global_batch_size": batch_size,
            "train_examples": {"x".join(map(str, size)): len(next(iter(group.values())))
                               for size, group in run.data.train.items()}}
