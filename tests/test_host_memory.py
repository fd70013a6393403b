"""The CPU backend's host allocator (t2ijax/host_memory.py): freed large blocks are reused instead of
faulted in again, and only where nothing but the CPU backend can start."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Page faults taken by filling the second of two 256 MB blocks (the first freed before), as XLA:CPU allocates
# a step's temporaries: glibc's default hands such a block back to the kernel, so the second faults in again.
REFAULTS = textwrap.dedent("""
    import ctypes, ctypes.util, resource
    from t2ijax import host_memory
    tuned = host_memory.tune_for_cpu()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    size = 2 ** 28
    def filled():
        block = libc.malloc(ctypes.c_size_t(size))
        ctypes.memset(block, 1, size)
        return block
    libc.free(ctypes.c_void_p(filled()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    filled()
    print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _run(env_changes: dict) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "T2IJAX_MALLOC", "TPU_LIBRARY_PATH")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", REFAULTS], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return out[0], int(out[1])


def test_freed_blocks_are_reused_on_the_cpu_backend():
    pages = 2 ** 28 // os.sysconf("SC_PAGE_SIZE")
    tuned, tuned_faults = _run({})
    default, default_faults = _run({"T2IJAX_MALLOC": "system"})
    assert (tuned, default) == ("True", "False")
    assert default_faults > pages // 2  # faulted in afresh
    assert tuned_faults < pages // 100


@pytest.mark.parametrize("env", [{"JAX_PLATFORMS": "tpu"}, {"JAX_PLATFORMS": "cuda,cpu"},
                                 {"TPU_LIBRARY_PATH": "/nonexistent/libtpu.so"}])
def test_an_accelerator_host_keeps_glibcs_defaults(env):
    assert _run(env)[0] == "False"


def test_cpu_named_first_is_tuned_even_beside_an_accelerator_library():
    assert _run({"JAX_PLATFORMS": "cpu", "TPU_LIBRARY_PATH": "/nonexistent/libtpu.so"})[0] == "True"
