"""Every train step shape compiled before step 0: several at once, each timed, through jax's
persistent compilation cache (docs/resolution.md, "Every shape compiled before step 0")."""
import concurrent.futures
import os
import time
from typing import Callable, Sequence

import jax
from absl import logging
from jax.experimental.compilation_cache import compilation_cache

Shape = tuple[int, ...]  # a batch's x0 shape [B, H, W, C]: what a compiled train step is keyed by

_cache_dir_set_here: str | None = None  # the directory use_cache gave jax last, if it did


def use_cache(cache_dir: str, workdir: str) -> str | None:
    """Points jax's persistent compilation cache at `cache_dir` ("{workdir}" standing for `workdir`;
    "" = off) and returns the directory in use. A cache jax was given otherwise (the
    JAX_COMPILATION_CACHE_DIR environment variable, jax.config.update) is kept: one cache for every
    run of the machine. jax's thresholds apply: programs compiled in under
    jax_persistent_cache_min_compile_time_secs (1 s) are not stored, and only process 0 writes."""
    global _cache_dir_set_here
    current = jax.config.jax_compilation_cache_dir
    if current and current != _cache_dir_set_here:
        return current
    directory = cache_dir.replace("{workdir}", workdir)
    if directory != (current or ""):
        jax.config.update("jax_compilation_cache_dir", directory or None)
        compilation_cache.reset_cache()  # the cache object is made once per directory, on first use
        _cache_dir_set_here = directory or None
    return directory or None


def compile_all(compile_one: Callable[[dict], object], batches: Sequence[dict], threads: int
                ) -> tuple[dict[Shape, object], dict[Shape, float]]:
    """`compile_one(batch)` for each batch, `threads` at a time (0: one per core, at most one per
    batch); returns ({shape: compiled}, {shape: seconds it took}) in the order of `batches`, the
    shape being batch["x0"]'s. Tracing and lowering hold the GIL; XLA's compilation releases it."""
    def timed(batch):
        started = time.perf_counter()
        compiled = compile_one(batch)
        return compiled, time.perf_counter() - started

    workers = min(threads or os.cpu_count() or 1, len(batches)) or 1
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="compile") as pool:
        results = list(pool.map(timed, batches))
    shapes = [tuple(batch["x0"].shape) for batch in batches]
    return ({s: compiled for s, (compiled, _) in zip(shapes, results)},
            {s: seconds for s, (_, seconds) in zip(shapes, results)})


def log_compile_times(seconds: dict[Shape, float], wall: float) -> None:
    logging.info("%d train step shape(s) compiled in %.1f s: %s", len(seconds), wall,
                 ", ".join(f"{'x'.join(map(str, shape))} {s:.1f} s" for shape, s in seconds.items()))
