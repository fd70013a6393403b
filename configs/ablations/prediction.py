"""Ablation of config.diffusion.prediction (and where its loss is measured, config.diffusion.loss_space).

Everything else is the CPU demo (configs/shapes_tiny.py). epsilon cannot give x0 at t = 1 on
rectified flow, so it is tried on vp_linear, next to velocity on vp_linear as its control.
One variant:
  python -m t2ijax.main --config=configs/ablations/prediction.py:x0 --workdir=workdirs/ablations/prediction/x0
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/prediction.py --workdir=workdirs/ablations/prediction
Result (2026-11-26, 1600 steps, one seed, docs/ablations/formulation.md): held-out shape accuracy
velocity 0.761, v 0.776, x0 0.716 (its velocity MSE at t < 0.3 is 3.5x higher); on vp_linear
velocity 0.413, epsilon 0.075; x0_loss_x0 not run yet.
"""
from configs.ablations import variant_config

VARIANTS = {
    "velocity": {},  # the baseline
    "x0": {"diffusion.prediction": "x0", "diffusion.loss_space": "velocity"},  # PRX / JiT
    "x0_loss_x0": {"diffusion.prediction": "x0"},
    "v": {"diffusion.prediction": "v"},
    "epsilon_vp_linear": {"diffusion.prediction": "epsilon", "diffusion.path": "vp_linear"},
    "velocity_vp_linear": {"diffusion.path": "vp_linear"},
}


def get_config(variant: str = "velocity"):
    return variant_config(VARIANTS, variant)
