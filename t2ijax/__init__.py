"""Text-to-image flow-matching training in JAX. `t2ijax.load_run(workdir, step=None)` loads a trained run
(t2ijax/training/restore.py); importing the package alone imports nothing else."""
import os

# Read once by etils and gcsfs, at their first use, so set before any t2ijax module imports them (t2ijax/storage.py):
os.environ.setdefault("EPATH_USE_TF", "false")  # gs:// paths through gcsfs, which an emulator can serve in tests
# gcsfs's per-bucket layout lookup calls a gRPC control plane (zonal and hierarchical buckets) that t2ijax never uses.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def __getattr__(name: str):
    if name == "load_run":  # lazy: jax and the models load on first use
        from t2ijax.training.restore import load_run

        return load_run
    raise AttributeError(f"module 't2ijax' has no attribute {name!r}")
