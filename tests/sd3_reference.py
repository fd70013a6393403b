"""diffusers' SD3Transformer2DModel as the reference t2ijax's MMDiT is checked against."""
import numpy as np
import torch
from diffusers import SD3Transformer2DModel


def reference_sd3(cfg: dict, seed: int = 0) -> SD3Transformer2DModel:
    """SD3Transformer2DModel(**cfg) in eval mode with random weights everywhere: diffusers starts SD3's Linears
    (adaLN included) at torch's random init; the q/k RMSNorm scales (ones) are drawn from N(1, 0.2) so that a
    swapped norm shows."""
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(**cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".norm_" in name:
                param.normal_(1.0, 0.2)
    return model


def reference_forward(model: SD3Transformer2DModel, x, t, text, pooled) -> np.ndarray:
    """The model on NHWC numpy latents, t in [0, 1] given as SD3's pipeline gives it (sigma * 1000), output NHWC."""
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(text), torch.from_numpy(pooled),
                    torch.from_numpy(t * np.float32(1000))).sample
    return out.permute(0, 2, 3, 1).numpy()
