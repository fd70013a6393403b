"""Ablation of config.model.name: the backbones PRX Part 1 compared, on the CPU demo (configs/shapes_tiny.py:
hidden 128, 4 heads, 8 x 8 pixel tokens of 4 x 4 patches, MiniLM layer 4 text).

Two grids share the PRX baseline (1.62M parameters at 4 blocks):
- equal width and depth: every backbone at hidden 128 and 4 blocks (its parameters then differ:
  dit_cross 1.22M, mmdit 2.26M, flux 1.79M with 2 double- and 2 single-stream blocks, uvit 0.87M with 2 in- and
  2 out-blocks);
- equal parameters (within 6 % of PRX's, by depth alone): dit_cross 6 blocks (1.72M), mmdit 3 (1.70M),
  flux 5 of which 1 double-stream (1.69M), uvit 8 (1.66M);
and MMDiT and U-ViT at a quarter of the demo's learning rate (tuned on PRX).
One variant:
  python -m t2ijax.main --config=configs/ablations/architecture.py:mmdit --workdir=workdirs/ablations/arch/mmdit
The whole axis with 3 seeds, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/architecture.py --workdir=workdirs/ablations/architecture \
      --seeds=3 --config.total_steps=500
Result: docs/ablations/architecture.md.
"""
from configs.ablations import variant_config

VARIANTS = {
    "prx": {},  # the baseline of both grids
    "dit_cross": {"model.name": "dit_cross"},
    "mmdit": {"model.name": "mmdit"},
    "uvit": {"model.name": "uvit"},
    "flux": {"model.name": "flux"},
    "dit_cross_params": {"model.name": "dit_cross", "model.depth": 6},
    "mmdit_params": {"model.name": "mmdit", "model.depth": 3},
    "uvit_params": {"model.name": "uvit", "model.depth": 8},
    "flux_params": {"model.name": "flux", "model.depth": 5, "model.double_blocks": 1},
    # The demo's learning rate (4e-3) was tuned on PRX: the two backbones furthest behind at a quarter of it.
    "mmdit_lr_1e-3": {"model.name": "mmdit", "optim.learning_rate": 1e-3},
    "uvit_lr_1e-3": {"model.name": "uvit", "optim.learning_rate": 1e-3},
}


def get_config(variant: str = "prx"):
    return variant_config(VARIANTS, variant)
