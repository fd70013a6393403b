"""Ablation of config.diffusion.loss_weighting, each weight moved exactly into the velocity loss.

Everything else is the CPU demo (configs/shapes_tiny.py).
One variant:
  python -m t2ijax.main --config=configs/ablations/loss_weighting.py:min_snr \
      --workdir=workdirs/ablations/loss_weighting/min_snr
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/loss_weighting.py --workdir=workdirs/ablations/loss_weighting
Result (2026-11-26, 1600 steps, one seed, docs/ablations/formulation.md): held-out shape accuracy
uniform 0.761, min_snr 0.408, edm 0.771; sigmoid not run yet.
"""
from configs.ablations import variant_config

VARIANTS = {
    "uniform": {},  # the baseline
    "min_snr": {"diffusion.loss_weighting": "min_snr"},
    "sigmoid": {"diffusion.loss_weighting": "sigmoid"},
    "edm": {"diffusion.loss_weighting": "edm"},
}


def get_config(variant: str = "uniform"):
    return variant_config(VARIANTS, variant)
