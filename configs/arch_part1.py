"""The five backbones at the setting of Photoroom's architecture study (PRX Part 1), for planning.

  python -m t2ijax.plan --config=configs/arch_part1.py:mmdit --devices=64 --mesh=fsdp:64

The backbone is the argument: prx (default), dit_cross, mmdit, flux or uvit. All share the study's
setting: width 1792, depth 16, 28 heads, patch 2, 256 px images on the Flux VAE (16 latent channels,
8x down: 32 x 32 latents, 256 image tokens), T5Gemma-2B's encoder (2304 wide) with 256 text tokens,
batch 256, bfloat16 compute, remat of the dots, FSDP over every device. Nothing else differs: flux
splits its 16 blocks by the default model.double_blocks=0 (a third double-stream: 6 double, 10
single), uvit's are 8 in-blocks and 8 out-blocks (no mid-block at an even depth).

configs/architectures/ holds the autoencoder's and the text encoder's config.json and nothing else:
their shapes, no weights. That is enough to plan (t2ijax.plan reads latent channels, downsampling
and text width from config.json alone), not to train: for a run, point autoencoder.name at the FLUX.1
VAE and text_encoder.path at a T5Gemma-2B encoder directory with weights and tokenizer.
docs/scaling.md ("Backbones at PRX Part 1's scale") has the plans.
"""
from pathlib import Path

from configs import base
from t2ijax.errors import ConfigError

ARCHITECTURES = Path(__file__).resolve().parent / "architectures"
FLUX_VAE = str(ARCHITECTURES / "flux_vae")
T5GEMMA_2B_ENCODER = str(ARCHITECTURES / "t5gemma_2b_encoder")

BACKBONES = ("prx", "dit_cross", "mmdit", "flux", "uvit")


def get_config(backbone: str = "prx"):
    if backbone not in BACKBONES:
        raise ConfigError(f"configs/arch_part1.py:{backbone}: unknown backbone; the backbones are "
                          f"{', '.join(BACKBONES)}")
    c = base.get_config()
    c.data.update(resolution=256, global_batch_size=256)
    c.autoencoder.name = FLUX_VAE
    c.text_encoder.update(name="t5gemma-2b-2b-ul2 encoder (shapes only)", path=T5GEMMA_2B_ENCODER, max_length=256)
    c.model.update(name=backbone, hidden_size=1792, depth=16, num_heads=28, patch_size=2, dtype="bfloat16",
                   remat_policy="dots")
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
