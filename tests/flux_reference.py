"""diffusers' FluxTransformer2DModel as the reference t2ijax's Flux is checked against, fed the way FluxPipeline
feeds it (its own _pack_latents, _prepare_latent_image_ids and _unpack_latents)."""
import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel


def reference_flux(cfg: dict, seed: int = 0) -> FluxTransformer2DModel:
    """FluxTransformer2DModel(**cfg) in eval mode with random weights everywhere: torch's Linears start random,
    the q/k RMSNorm scales (ones) are drawn from N(1, 0.2) so that a swapped norm shows."""
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".norm_" in name:
                param.normal_(1.0, 0.2)
    return model


def reference_forward(model: FluxTransformer2DModel, x, t, text, pooled, guidance=None) -> np.ndarray:
    """The model on NHWC numpy latents (t in [0, 1], as FluxPipeline passes timestep / 1000), output NHWC."""
    b, h, w, c = x.shape
    latents = FluxPipeline._pack_latents(torch.from_numpy(x).permute(0, 3, 1, 2), b, c, h, w)
    with torch.no_grad():
        out = model(latents, torch.from_numpy(text), torch.from_numpy(pooled), torch.from_numpy(t),
                    img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
                    txt_ids=torch.zeros(text.shape[1], 3),
                    guidance=None if guidance is None else torch.from_numpy(guidance)).sample
    return FluxPipeline._unpack_latents(out, h, w, 1).permute(0, 2, 3, 1).numpy()
