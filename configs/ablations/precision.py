"""Precision of the denoiser on the CPU demo: float32 against bfloat16 compute over float32 master
weights (parameters, optimizer state and outputs stay float32), and against bfloat16-stored weights
(model.param_dtype: parameters, gradients and optimizer state in bfloat16, where updates smaller
than half a bfloat16 step of a weight are rounded away: PRX's "silent degradation").

Everything else is configs/shapes_tiny.py. On CPUs without bfloat16 units the bfloat16 variant
is slower; the axis measures what it does to quality.
One variant:
  python -m t2ijax.main --config=configs/ablations/precision.py:bfloat16 --workdir=workdirs/ablations/precision/bfloat16
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/precision.py --workdir=workdirs/ablations/precision
Result (2026-11-27, one seed, docs/ablations/grid_toy.md): shape float32 0.755 ± 0.046 (3 seeds), bfloat16
0.801, bfloat16_weights 0.746: within noise at the demo's lr 4e-3; bfloat16_text not run.
"""
from configs.ablations import variant_config

VARIANTS = {
    "float32": {},  # the baseline
    "bfloat16": {"model.dtype": "bfloat16"},
    "bfloat16_text": {"model.dtype": "bfloat16", "text_encoder.dtype": "bfloat16"},
    "bfloat16_weights": {"model.dtype": "bfloat16", "model.param_dtype": "bfloat16"},
}


def get_config(variant: str = "float32"):
    return variant_config(VARIANTS, variant)
