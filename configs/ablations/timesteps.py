"""Ablation of config.diffusion.timesteps (the training distribution of t) and its time shift.

Everything else is the CPU demo (configs/shapes_tiny.py); a shift applies to sampling as well.
One variant:
  python -m t2ijax.main --config=configs/ablations/timesteps.py:mode --workdir=workdirs/ablations/timesteps/mode
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/timesteps.py --workdir=workdirs/ablations/timesteps
Result (2026-11-26, 1600 steps, one seed, docs/ablations/formulation.md): held-out shape accuracy
logit_normal 0.761, uniform 0.706, mode 0.751, logit_normal_shift1 0.363; the others not run yet.
"""
from configs.ablations import variant_config

VARIANTS = {
    "logit_normal": {},  # the baseline: logit-normal(0, 1) with 10% uniform, shift 3 (the demo's)
    "uniform": {"diffusion.timesteps": "uniform"},
    "mode": {"diffusion.timesteps": "mode"},
    "cosmap": {"diffusion.timesteps": "cosmap"},
    "discrete": {"diffusion.timesteps": "discrete"},
    "logit_normal_pure": {"diffusion.uniform_fraction": 0.0},
    "logit_normal_shift1": {"diffusion.shift": 1.0},  # no shift
    # 64 image tokens: Flux's rule gives shift exp(0.5 - 0.65 * 192 / 3840) = 1.6.
    "logit_normal_resolution": {"diffusion.shift_mode": "resolution"},
}


def get_config(variant: str = "logit_normal"):
    return variant_config(VARIANTS, variant)
