"""Ablation of config.sampler: solver, step count and guidance interval.

Everything else is the CPU demo (configs/shapes_tiny.py; euler, 25 steps, guidance 4). The variants
train the same model and differ only when sampling; ddim needs a VP path, so it is compared with
euler on vp_cosine.
One variant:
  python -m t2ijax.main --config=configs/ablations/sampler.py:heun --workdir=workdirs/ablations/sampler/heun
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/sampler.py --workdir=workdirs/ablations/sampler
Result: not run yet; docs/ablations/ will hold compositional accuracy per variant.
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
