"""How image sizes are handled, on the CPU demo (configs/shapes_tiny.py, 800 steps): training at 32 px,
at 64 px, progressively (32 then 64 px, as PRX goes 512 then 1024), and with aspect-ratio buckets; the
position encoding and the resolution conditioning under progressive training; the time shift that
follows the token count. Every variant is evaluated at 32 x 32, 64 x 64 and 32 x 64 (height x width).

One variant:
  python -m t2ijax.main --config=configs/ablations/resolution.py:progressive --workdir=workdirs/ablations/resolution/progressive
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/resolution.py --workdir=workdirs/ablations/resolution
Result: docs/ablations/resolution.md.
"""
import math

from configs.ablations import variant_config

STEPS = 800
LOW_STEPS = 600  # progressive: steps at 32 px before the last ones at 64 px
BATCH = 16
LEARNING_RATE = 4e-3  # the demo's
PROGRESSIVE = {"data.resolution": 64,
               "resolution.phases": ((32, BATCH, LOW_STEPS, LEARNING_RATE), (64, BATCH, STEPS - LOW_STEPS, LEARNING_RATE))}
# SD3: the shift grows with the square root of the token count: the demo's 3.0 at 32 px (64 tokens), 6.0 at 64 px.
RESOLUTION_SHIFT = {"diffusion.shift_mode": "resolution", "diffusion.base_tokens": 64, "diffusion.max_tokens": 256,
                    "diffusion.base_log_shift": math.log(3.0), "diffusion.max_log_shift": math.log(6.0)}

VARIANTS = {
    "res32": {},
    "res64": {"data.resolution": 64},
    "res32_normalized_rope": {"model.pos_embed": "rope_2d_normalized"},
    "progressive": PROGRESSIVE,
    "progressive_normalized_rope": {**PROGRESSIVE, "model.pos_embed": "rope_2d_normalized", "model.pos_grid": 8},
    "progressive_learned_absolute": {**PROGRESSIVE, "model.pos_embed": "learned_absolute", "model.pos_grid": 8},
    "progressive_resolution_vec": {**PROGRESSIVE, "model.resolution_cond": "vec"},
    "progressive_resolution_tokens": {**PROGRESSIVE, "model.resolution_cond": "tokens"},
    "progressive_resolution_shift": {**PROGRESSIVE, **RESOLUTION_SHIFT},
    "buckets": {"resolution.buckets": True, "data.aspect_ratios": (0.5, 1.0, 2.0)},
}


def get_config(variant: str = "res32"):
    config = variant_config(VARIANTS, variant)
    config.total_steps = STEPS
    config.eval.sizes = ((32, 32), (64, 64), (32, 64))
    config.sample.every_steps = 0
    return config
