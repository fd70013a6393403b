"""Ablation of config.sampler: solver, step count and guidance interval.

Everything else is the CPU demo (configs/shapes_tiny.py; euler, 25 steps, guidance 4). The variants
train the same model and differ only when sampling; ddim needs a VP path, so it is compared with
euler on vp_cosine.
One variant:
  python -m t2ijax.main --config=configs/ablations/sampler.py:heun --workdir=workdirs/ablations/sampler/heun
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/sampler.py --workdir=workdirs/ablations/sampler
Result (2026-11-26, scored on the demo's checkpoint with t2ijax.evaluate --sampler/--steps/
--guidance_interval, docs/ablations/formulation.md): at 25 steps euler / heun / dpmpp_2m give shape
0.761 / 0.761 / 0.756; euler_8 0.746, heun_4 0.701, dpmpp_2m_8 0.721; guidance in [0.1, 0.8] 0.771;
on a vp_cosine + v model euler 0.721, ddim 0.741.
"""
from configs.ablations import variant_config

VARIANTS = {
    "euler": {},  # the baseline
    "heun": {"sampler.name": "heun"},
    "dpmpp_2m": {"sampler.name": "dpmpp_2m"},
    "euler_8": {"sampler.steps": 8},
    "heun_4": {"sampler.name": "heun", "sampler.steps": 4},  # 7 network evaluations
    "dpmpp_2m_8": {"sampler.name": "dpmpp_2m", "sampler.steps": 8},
    "guidance_interval": {"sampler.guidance_interval": (0.1, 0.8)},
    "euler_vp_cosine": {"diffusion.path": "vp_cosine", "diffusion.prediction": "v"},
    "ddim_vp_cosine": {"diffusion.path": "vp_cosine", "diffusion.prediction": "v", "sampler.name": "ddim"},
}


def get_config(variant: str = "euler"):
    return variant_config(VARIANTS, variant)
