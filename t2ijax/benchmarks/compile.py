"""The compile suite: lowering plus compiling the train step at the config's depth and at
config.bench.compile_depth. With scanned layers the two should cost about the same."""
import time
from typing import Callable

import jax

from t2ijax.benchmarks.synthetic import synthetic


def timed_compile(lower: Callable[[], jax.stages.Lowered]) -> tuple[jax.stages.Compiled, dict]:
    """`lower()` compiled, and the seconds lowering and compiling took."""
    start = time.perf_counter()
    lowered = lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return compiled, {"lower_s": lowered_at - start, "compile_s": time.perf_counter() - lowered_at}


def compile_seconds(config) -> dict:
    return timed_compile(synthetic(config, materialize=False).lowered_train_step)[1]


def compile_suite(config) -> dict:
    shallow = config.copy_and_resolve_references()
    shallow.model.depth = config.bench.compile_depth
    deep, short = compile_seconds(config), compile_seconds(shallow)
    total = lambda r: r["lower_s"] + r["compile_s"]
    return {"depth": config.model.depth, "scan_layers": config.model.scan_layers, **deep,
            "compile_depth": shallow.model.depth, "compile_depth_lower_s": short["lower_s"],
            "compile_depth_compile_s": short["compile_s"], "ratio": total(deep) / total(short)}
