"""The host allocator on XLA's CPU backend: freed blocks kept for the next step.

XLA:CPU allocates a compiled program's temporaries (2.2 GB for the bench model's train step) afresh on every
call. glibc's malloc serves a block that large with a fresh mmap and unmaps it on free, so every step
faults its temporaries in again, page by page (docs/benchmarks.md: 2229 against 1730 ms a step of the
bench model on a 2-core box). Told to keep one heap, never to mmap and never to trim, malloc hands the same
pages back each step, and the process's resident memory stays at its peak instead of falling between steps.
The one heap slows XLA's multithreaded compiler, so compile-bound work (the tests) is better off without it.

The settings must come before XLA's worker threads first allocate: a thread that already has its own
arena keeps it and still mmaps its large blocks. So they are made before the backend starts, when only a
CPU backend can start: no TPU library and no PJRT plugin is installed, or JAX_PLATFORMS puts cpu first. An
accelerator keeps its temporaries in device memory and its host keeps glibc's defaults.
T2IJAX_MALLOC=system keeps the defaults on a CPU too.
"""
import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os

import jax

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
# One arena, no mmap, and trimming off: mallopt(M_TRIM_THRESHOLD, -1) disables it (GLIBC_TUNABLES can only
# set a large threshold, and only at process start).
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
OPT_OUT = "T2IJAX_MALLOC"


def keep_freed_blocks() -> bool:
    """Sets glibc's malloc to reuse freed blocks instead of returning them to the kernel; False where the C
    library is not glibc (no mallopt) or refuses a setting."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)


def cpu_backend_only() -> bool:
    """Whether jax can only start its CPU backend here, decided without starting one: JAX_PLATFORMS (or
    jax.config's jax_platforms) names cpu first, or there is no TPU library (libtpu, TPU_LIBRARY_PATH) and no
    PJRT plugin (a `jax_plugins` module or entry point, as jax discovers them)."""
    platforms = jax.config.jax_platforms
    if platforms:
        return platforms.split(",")[0] == "cpu"
    return not (importlib.util.find_spec("libtpu") or os.environ.get("TPU_LIBRARY_PATH")
                or importlib.util.find_spec("jax_plugins") or importlib.metadata.entry_points(group="jax_plugins"))


def tune_for_cpu() -> bool:
    """keep_freed_blocks where only the CPU backend can start, unless T2IJAX_MALLOC=system; True where it
    took effect. Call first thing in a command, before anything starts a jax backend or a thread pool."""
    return os.environ.get(OPT_OUT) != "system" and cpu_backend_only() and keep_freed_blocks()
