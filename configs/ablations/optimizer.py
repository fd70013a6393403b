"""The optimizer on the CPU demo: AdamW with the demo's cosine decay against PRX's warmup-then-constant
schedule and weight decay, and Muon on the transformer blocks' matrices (AdamW on the rest) at PRX's
Muon learning rate and at the demo's AdamW one.

Everything else is configs/shapes_tiny.py (AdamW lr 4e-3, warmup 200, cosine to 5 %, b2 0.95, eps 1e-15,
no weight decay, clipping at 1.0, 1600 steps). Muon variants take PRX's Adam eps (1e-8) for the params
Muon does not take, as configs/ablations/techniques.py does. The learning rate, warmup, b2, eps and
clipping are swept in configs/ablations/hyperparameters.py.
One variant:
  python -m t2ijax.main --config=configs/ablations/optimizer.py:muon_demo_lr \
      --workdir=workdirs/ablations/optimizer/muon_demo_lr
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/optimizer.py --workdir=workdirs/ablations/optimizer
Result (2026-11-27, one seed, docs/ablations/grid_toy.md): shape adamw_cosine 0.755 ± 0.046 (3 seeds),
adamw_constant 0.791, adamw_wd_0.1 0.761, muon_demo_lr 0.980, muon (PRX's lr 1e-4) 0.333.
"""
from configs.ablations import variant_config
from configs.ablations.techniques import MUON

VARIANTS = {
    "adamw_cosine": {"optim.name": "adamw"},  # the baseline (shapes_tiny already trains with AdamW)
    "adamw_constant": {"optim.schedule": "constant"},  # PRX: constant after warmup
    "adamw_wd_0.1": {"optim.weight_decay": 0.1},
    "muon": MUON,  # Muon's lr: base.py's 1e-4 (PRX's)
    "muon_demo_lr": {**MUON, "optim.muon_learning_rate": 4e-3},
}


def get_config(variant: str = "adamw_cosine"):
    return variant_config(VARIANTS, variant)
