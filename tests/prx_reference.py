"""diffusers' PRXTransformer2DModel and PRXPipeline as the references t2ijax's PRX is checked against."""
from pathlib import Path

import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel
from diffusers.pipelines.prx.pipeline_prx import PRXPipeline
from transformers.models.t5gemma.modeling_t5gemma import T5GemmaEncoder

from text_parity import save_word_tokenizer, tiny_config


def reference_prx(cfg: dict, seed: int = 0, randomize: tuple[str, ...] = ("modulation",)) -> PRXTransformer2DModel:
    """PRXTransformer2DModel(**cfg) in eval mode. adaLN-Zero weights start at zero, which would hide
    them from a comparison: parameters whose names contain a `randomize` entry are drawn from N(0, 0.2)."""
    torch.manual_seed(seed)
    model = PRXTransformer2DModel(**cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in randomize):
                param.normal_(0.0, 0.2)
    return model


def reference_forward(model: PRXTransformer2DModel, x, t, text, mask) -> np.ndarray:
    """The model on NHWC numpy inputs, output NHWC."""
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(text),
                    torch.from_numpy(mask)).sample
    return out.permute(0, 2, 3, 1).numpy()


def save_tiny_prx_pipeline(directory: Path) -> PRXPipeline:
    """A random PRXPipeline saved to `directory`: a T5Gemma encoder of width 32 with a word tokenizer
    (words w0 ... w97, 12 tokens), a 2-block PRX on 4 latent channels, a 2x-downsampling AutoencoderKL
    with its own scaling and shift factors, and a FlowMatchEulerDiscreteScheduler with shift 3."""
    torch.manual_seed(0)
    text_encoder = T5GemmaEncoder(tiny_config("t5gemma", encoder_only=True).encoder).eval()
    save_word_tokenizer(directory.parent / f"{directory.name}_word_tokenizer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory.parent / f"{directory.name}_word_tokenizer",
                                                           model_max_length=12)
    transformer = reference_prx(dict(in_channels=4, patch_size=2, context_in_dim=32, hidden_size=64, num_heads=4,
                                     depth=2, axes_dim=[8, 8]), randomize=("modulation", "final_layer.linear"))
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4,
                        scaling_factor=0.7, shift_factor=0.1).eval()
    pipe = PRXPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                       text_encoder=text_encoder, tokenizer=tokenizer, vae=vae)
    pipe.save_pretrained(directory)
    return pipe
