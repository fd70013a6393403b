"""A two-variant ablation axis over the tests' tiny config (tests/conftest.py), for tests/test_ablate.py.

Needs tests/ on the Python path; point config.data.data_dir at the tests' data with an override.
The variants train the same network and differ when sampling, so the grid compiles one train step.
"""
from conftest import tiny_config
from t2ijax.config import apply_overrides

VARIANTS = {
    "guidance_4": {},
    "guidance_2": {"sampler.guidance": 2.0},
}


def get_config(variant: str = "guidance_4"):
    config = tiny_config("data")
    config.total_steps = 4
    config.log.every_steps = 2
    config.checkpoint.update(every_steps=2, async_save=False)
    apply_overrides(config, VARIANTS[variant], f"variant '{variant}'")
    return config
