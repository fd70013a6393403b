"""Photoroom PRX checkpoints in diffusers format, in and out of t2ijax."""
from t2ijax.interop.diffusers_prx import prx_from_diffusers, prx_to_diffusers

__all__ = ["prx_from_diffusers", "prx_to_diffusers"]
