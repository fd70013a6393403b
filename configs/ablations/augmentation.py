"""Ablation of training-image augmentation (config.data.augmentation): none, horizontal flip (the mirrored
image with "left" and "right" swapped in its captions) and random crops (config.data.crop_views crops of
at least config.data.crop_min_scale of the side, resized back). The views are cached once per image and
one is drawn per example and epoch (t2ijax/data/augmentation.py).

Everything else is the CPU demo (configs/shapes_tiny.py). On the synthetic shapes a crop can cut an
object or move it across a position boundary while its caption stays, so crop measures how much such
label noise costs as much as what the extra views give.
One variant:
  python -m t2ijax.main --config=configs/ablations/augmentation.py:flip --workdir=workdirs/ablations/augmentation/flip
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/augmentation.py --workdir=workdirs/ablations/augmentation
Result (2026-11-27, one seed, docs/ablations/grid_toy.md): shape none 0.755 ± 0.046 (3 seeds), flip 0.751,
crop 0.522 (crops move objects across the positions and sizes the captions name).
"""
from configs.ablations import variant_config

VARIANTS = {
    "none": {},  # the baseline
    "flip": {"data.augmentation": "flip"},
    "crop": {"data.augmentation": "crop"},
}


def get_config(variant: str = "none"):
    return variant_config(VARIANTS, variant)
