"""The fixed networks a run's techniques use inside the train step, loaded once per run.

Their params travel as the step's third argument (replicated over the mesh), never closed over:
closed-over arrays would be compiled into the step as constants.
"""
import dataclasses

import flax.linen as nn
import ml_collections

from t2ijax.models.vision.lpips import load_lpips
from t2ijax.techniques.teachers import load_teacher


@dataclasses.dataclass(frozen=True)
class Frozen:
    """The teacher (REPA targets, P-DINO), the latent space that decodes x0 estimates to pixels
    (perceptual losses) and LPIPS; None where no technique needs it."""

    teacher: object = None
    space: object = None
    lpips: object = None


def needs_images(config: ml_collections.ConfigDict) -> bool:
    """Whether the step compares with the real images (REPA targets, perceptual losses)."""
    p = config.perceptual
    return config.repa.weight > 0 or p.dino_weight > 0 or p.lpips_weight > 0


def teacher_dim(config: ml_collections.ConfigDict) -> int:
    """Width of the REPA targets (0 when REPA is off): what the denoiser's projector outputs."""
    return load_teacher(config)[0].dim if config.repa.weight > 0 else 0


def load_frozen(config: ml_collections.ConfigDict, space) -> tuple[Frozen, dict]:
    """(networks, params) for config's techniques: {} and an empty Frozen when none is on."""
    p = config.perceptual
    networks, params = {}, {}
    if config.repa.weight > 0 or p.dino_weight > 0:
        networks["teacher"], params["teacher"] = load_teacher(config)
    if p.dino_weight > 0 or p.lpips_weight > 0:
        networks["space"], params["decoder"] = space, space.params
    if p.lpips_weight > 0:
        networks["lpips"], params["lpips"] = load_lpips(p.lpips_weights)
    # plain arrays: the mesh's logical-axis rules are for the denoiser, not these networks' layouts
    return Frozen(**networks), nn.meta.unbox(params)
