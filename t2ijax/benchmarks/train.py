"""The train suite: the compiled train step on random inputs (t2ijax/benchmarks/synthetic.py)."""
import time

import jax

from t2ijax.benchmarks import flops
from t2ijax.benchmarks.memory import memory
from t2ijax.benchmarks.synthetic import synthetic
from t2ijax.benchmarks.timing import seconds_per_call


def train_suite(config, steps: int, peak_flops_per_device: float, compiled: jax.stages.Compiled | None = None
                ) -> dict:
    """Images/s, image tokens/s, model FLOPs per step (analytic, and XLA's count of the compiled step),
    MFU against `peak_flops_per_device` times the devices, memory and compile time. `compiled`: the step
    already compiled for these inputs (the smoke suite's), not compiled again; compile_s is then None."""
    s = synthetic(config)
    lowered = s.lowered_train_step()
    compile_s = None
    if compiled is None:
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    parameters = sum(x.size for x in jax.tree.leaves(s.state.params))
    # XLA's count of the same step, its layers unrolled (it counts a loop body once), remat recomputation included
    unrolled = s.lowered_train_step(s.model.clone(scan_layers=False)) if s.model.scan_layers else lowered
    xla_flops = unrolled.cost_analysis()["flops"]
    state = s.state  # donated to the first step

    def step(_):
        nonlocal state
        state, metrics = compiled(state, s.batch, None)
        return metrics

    seconds = seconds_per_call(step, steps)
    b = config.bench
    model_flops = flops.train_step_flops(s.model, s.batch_size, b.latent_size, b.latent_size, b.text_length)
    achieved = model_flops / seconds
    return {"images_per_s": s.batch_size / seconds,
            "image_tokens_per_s": s.batch_size * s.image_tokens / seconds,
            "step_ms": 1e3 * seconds,
            "parameters": parameters,
            "model_flops_per_step": model_flops,
            "xla_flops_per_step": xla_flops,
            "model_gflops_per_s": achieved / 1e9,
            "mfu": achieved / (peak_flops_per_device * jax.device_count()),
            "compile_s": compile_s,
            **memory(compiled)}
