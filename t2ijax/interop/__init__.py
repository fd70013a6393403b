"""diffusers transformer checkpoints (PRX, PixArt-alpha, SD3, Flux) in and out of t2ijax."""
from t2ijax.interop.checkpoints import from_diffusers, to_diffusers
from t2ijax.interop.diffusers_prx import prx_from_diffusers, prx_to_diffusers
from t2ijax.interop.prx_pipeline import load_prx_pipeline

__all__ = ["from_diffusers", "load_prx_pipeline", "prx_from_diffusers", "prx_to_diffusers", "to_diffusers"]
