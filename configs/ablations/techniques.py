"""PRX's training techniques on the CPU demo (configs/shapes_tiny.py: 4 blocks, 8 x 8 tokens), each alone
against the baseline, and PRX's combination (REPA + TREAD + contrastive + EMA + Muon).

Offline there is no pretrained DINO: the REPA and P-DINO teacher is the encoder of the shapes
autoencoder (its 32-channel map before the latent projection, pooled to the 8 x 8 token grid), trained
first with
  python -m t2ijax.train_autoencoder --config=configs/shapes_autoencoder.py --workdir=workdirs/shapes_autoencoder
With weights at hand, point the teacher at them instead, e.g. --config.teacher.name=dinov2
--config.teacher.path=/path/to/dinov2-with-registers-base (REPA resizes the images to 8 x 14 px).
One variant:
  python -m t2ijax.main --config=configs/ablations/techniques.py:tread --workdir=workdirs/ablations/techniques/tread
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/techniques.py --workdir=workdirs/ablations/techniques
Result (800 steps, one seed): docs/ablations/techniques.md.
"""
from configs.ablations import variant_config
from configs.ablations.latent_normalization import SHAPES_AUTOENCODER

TEACHER = {"teacher.name": "autoencoder", "teacher.path": SHAPES_AUTOENCODER}
# PRX routes blocks 2..12 of 16 (the middle 11 of 16); on 4 blocks, the middle two.
ROUTING = {"routing.start": 1, "routing.end": 2, "routing.rate": 0.5}
EMA = {"ema.decay": 0.995, "ema.every_steps": 1}
MUON = {"optim.name": "muon", "optim.eps": 1e-8}  # with PRX's Adam eps for the params Muon does not take
REPA = {"repa.weight": 0.5, "repa.layer": 1, **TEACHER}  # PRX: block 8 of 16, about halfway
PRX_COMBINATION = {**REPA, "repa.projector": "attention", "routing.method": "tread", **ROUTING,
                   "contrastive.weight": 0.1, **EMA, **MUON}

VARIANTS = {
    "baseline": {},
    "repa": REPA,
    "repa_stop_800": {**REPA, "repa.stop_step": 800},  # PRX: early help, switched off later
    "irepa": {**REPA, "repa.projector": "conv", "repa.spatial_norm": True, "repa.layer": 0},
    "contrastive": {"contrastive.weight": 0.1},
    "tread": {"routing.method": "tread", **ROUTING},
    "tread_routed_guidance": {"routing.method": "tread", **ROUTING, "sampler.weak_branch": "routed"},
    "sprint": {"routing.method": "sprint", **ROUTING},
    "pdino": {"perceptual.dino_weight": 0.1, **TEACHER},
    # PRX's 0.999 every 10 steps averages over about 10k steps, longer than this whole run (its weights would
    # stay near the initial ones); the same EMA scaled to the demo's length: 0.995 every step (about 200).
    "ema": EMA,
    "muon": MUON,
    # PRX's Muon learning rate (1e-4) is its AdamW's; the demo's AdamW runs at 4e-3: the same for Muon here.
    "muon_demo_lr": {**MUON, "optim.muon_learning_rate": 4e-3},
    "bfloat16_weights": {"model.param_dtype": "bfloat16"},
    "prx_combination": PRX_COMBINATION,
    "prx_combination_demo_lr": {**PRX_COMBINATION, "optim.muon_learning_rate": 4e-3},
}


def get_config(variant: str = "baseline"):
    return variant_config(VARIANTS, variant)
