"""Ablation of config.diffusion.path: how x_t is made from data and noise.

Everything else is the CPU demo (configs/shapes_tiny.py), velocity prediction included; on VP paths
the velocity target grows like t^(-1/2) near the data (the prediction ablation tries v and epsilon).
One variant:
  python -m t2ijax.main --config=configs/ablations/path.py:vp_cosine --workdir=workdirs/ablations/path/vp_cosine
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/path.py --workdir=workdirs/ablations/path
Result (2026-11-26, 1600 steps, one seed, docs/ablations/formulation.md): held-out shape accuracy
rectified_flow 0.761, vp_cosine 0.532, vp_linear 0.413; vp_linear_scaled not run yet.
"""
from configs.ablations import variant_config

VARIANTS = {
    "rectified_flow": {},  # the baseline: x_t = (1 - t) x0 + t eps
    "vp_cosine": {"diffusion.path": "vp_cosine"},
    "vp_linear": {"diffusion.path": "vp_linear", "diffusion.beta_schedule": "linear"},
    "vp_linear_scaled": {"diffusion.path": "vp_linear", "diffusion.beta_schedule": "scaled_linear"},
}


def get_config(variant: str = "rectified_flow"):
    return variant_config(VARIANTS, variant)
