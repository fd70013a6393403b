"""Text-to-image flow-matching training in JAX. `t2ijax.load_run(workdir, step=None)` loads a trained run
(t2ijax/training/restore.py); importing the package alone imports nothing else."""


def __getattr__(name: str):
    if name == "load_run":  # lazy: jax and the models load on first use
        from t2ijax.training.restore import load_run

        return load_run
    raise AttributeError(f"module 't2ijax' has no attribute {name!r}")
