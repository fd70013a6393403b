"""Hyperparameter sensitivity on the CPU demo: learning rate, warmup, Adam b2 and eps, gradient
clipping and batch size, one at a time around the demo's values (the seed study found many of
them flat over a wide range; this axis measures it at toy scale).

Everything else is configs/shapes_tiny.py (lr 4e-3 cosine, warmup 200, b2 0.95, eps 1e-15,
clipping at 1.0, batch 16, 1600 steps). Batch variants keep the step count, so they see more or
fewer images.
One variant:
  python -m t2ijax.main --config=configs/ablations/hyperparameters.py:lr_1e-3 \
      --workdir=workdirs/ablations/hyperparameters/lr_1e-3
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/hyperparameters.py --workdir=workdirs/ablations/hyperparameters
Result (2026-11-27, one seed per variant, the baseline over 3 seeds: shape 0.755 ± 0.046;
docs/ablations/grid_toy.md): warmup, b2, eps, clipping and lr 2e-3..8e-3 all within noise (shape 0.68-0.82);
lr 1e-3 0.50, batch 8 0.46, batch 32 0.995 (twice the images).
"""
from configs.ablations import variant_config

VARIANTS = {
    "demo": {},  # the baseline
    "lr_1e-3": {"optim.learning_rate": 1e-3},
    "lr_2e-3": {"optim.learning_rate": 2e-3},
    "lr_8e-3": {"optim.learning_rate": 8e-3},
    "warmup_0": {"optim.warmup_steps": 0},
    "warmup_800": {"optim.warmup_steps": 800},
    "b2_0.999": {"optim.b2": 0.999},
    "eps_1e-8": {"optim.eps": 1e-8},
    "clip_0.2": {"optim.grad_clip_norm": 0.2},
    "no_clip": {"optim.grad_clip_norm": 0.0},
    "batch_8": {"data.global_batch_size": 8},
    "batch_32": {"data.global_batch_size": 32},
}


def get_config(variant: str = "demo"):
    return variant_config(VARIANTS, variant)
