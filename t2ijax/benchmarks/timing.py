"""How every suite times work, and what it runs on."""
import json
import os
import platform
import time


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu} ({os.cpu_count()} cores), {jax.device_count()} x {jax.devices()[0].device_kind}"


def seconds_per_call(call, repeats: int) -> float:
    """Mean wall seconds of call(i) for i = 1..repeats, after the untimed call(0) (compilation,
    first-touch allocation); waits for the last result's device work."""
    import jax

    jax.block_until_ready(call(0))
    start = time.perf_counter()
    for i in range(1, repeats + 1):
        out = call(i)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def images_per_second(call, repeats: int, batch_size: int) -> float:
    return batch_size / seconds_per_call(call, repeats)


def matmul_peak_flops(size: int, dtype: str, repeats: int = 10) -> float:
    """FLOP/s of a jitted [size, size] @ [size, size] matmul on the default device: the peak MFU is
    measured against, on this machine in this run."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.dtype(dtype))
    matmul = jax.jit(lambda a, b: a @ b)
    return 2 * size ** 3 / seconds_per_call(lambda _: matmul(a, b), repeats)


def under_load(run) -> dict:
    """`run()`'s result dict with the 1-minute load average at its start and its end: what else the box ran."""
    load = os.getloadavg()[0]
    result = run()
    result["load_average_1min"] = [load, os.getloadavg()[0]]
    return result


def write_json(result: dict, path: str) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
