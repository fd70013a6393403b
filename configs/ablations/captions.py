"""Ablation of the training captions (config.data.captions): the synthetic shapes' long captions, their
short ones, and PRX's mix of both (each example's caption drawn per epoch, 80% long, 20% short).

Everything else is the CPU demo (configs/shapes_tiny.py). Validation and evaluation use the first field
named, so every variant is evaluated on the same long prompts: the only change is what it trained on.
One variant:
  python -m t2ijax.main --config=configs/ablations/captions.py:mixed --workdir=workdirs/ablations/captions/mixed
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/captions.py --workdir=workdirs/ablations/captions
Result (2026-11-26, 1600 steps, one seed, docs/ablations/captions.md): held-out scene accuracy long 0.61,
short 0.01, mixed 0.50 (PRX at 256 px, 100k steps: FID 18.2 with long captions, 36.8 with short ones).
"""
from configs.ablations import variant_config

VARIANTS = {
    "long": {"data.captions": (("caption_long", 1.0),)},  # the demo's own: explicit for other baselines (@compose_tiny)
    # The long field comes first with weight 0: never trained on, but what every variant is evaluated on.
    "short": {"data.captions": (("caption_long", 0.0), ("caption_short", 1.0))},
    "mixed": {"data.captions": (("caption_long", 0.8), ("caption_short", 0.2))},
}


def get_config(variant: str = "long"):
    return variant_config(VARIANTS, variant)
