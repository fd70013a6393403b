"""The study on the compose benchmark (configs/compose_tiny.py, issue 33): one variant from each axis that
PRX or the shapes grids found to matter, each against the same compose baseline, 3 seeds each.

Every variant is an existing axis's own overrides (named here as <axis>.<variant> of configs/ablations/),
applied to compose_tiny instead of the shapes demo, so one grid shares one baseline:
  python -m t2ijax.ablate --config=configs/ablations/compose_study.py --workdir=workdirs/ablations/compose_study
REPA/iREPA need a teacher trained on compose first (the offline stand-in for DINO, see techniques.py):
  python -m t2ijax.train_autoencoder --config=configs/compose_tiny.py --workdir=workdirs/compose_autoencoder
Not run yet: it waits for compose_tiny's calibration (docs/benchmarks.md, "The compose benchmark's calibration").
"""
from configs.ablations import (captions, loss_weighting, optimizer, path, prediction, techniques, text_encoder,
                               timesteps, variant_config)

COMPOSE_AUTOENCODER = "workdirs/compose_autoencoder/autoencoder"
TEACHER = {"teacher.name": "autoencoder", "teacher.path": COMPOSE_AUTOENCODER}

VARIANTS = {
    "baseline": {},
    "path.vp_cosine": path.VARIANTS["vp_cosine"],
    "prediction.x0": prediction.VARIANTS["x0"],
    "timesteps.uniform": timesteps.VARIANTS["uniform"],
    "timesteps.shift1": timesteps.VARIANTS["logit_normal_shift1"],
    "loss_weighting.min_snr": loss_weighting.VARIANTS["min_snr"],
    "text_encoder.random": text_encoder.VARIANTS["random"],
    "text_encoder.none": text_encoder.VARIANTS["none"],
    "captions.long": captions.VARIANTS["long"],
    "captions.short": captions.VARIANTS["short"],
    "optimizer.adamw_cosine": optimizer.VARIANTS["adamw_cosine"],  # the baseline trains with Muon
    "techniques.repa": {**techniques.REPA, **TEACHER},
    "techniques.irepa": {**techniques.VARIANTS["irepa"], **TEACHER},
}


def get_config(variant: str = "baseline"):
    return variant_config(VARIANTS, variant if "@" in variant else f"{variant}@compose_tiny")
