"""diffusers' PixArtTransformer2DModel as the reference t2ijax's DiTCross is checked against."""
import numpy as np
import torch
from diffusers import PixArtTransformer2DModel


def reference_pixart(cfg: dict, seed: int = 0) -> PixArtTransformer2DModel:
    """PixArtTransformer2DModel(**cfg) in eval mode. Its construction leaves no weight at zero (torch's
    Linear init, N(0, 1/dim) scale-shift tables), so every weight shows in a comparison: checked here."""
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**cfg).eval()
    for name, param in model.named_parameters():
        assert param.std() > 0, f"{name} is constant: a comparison would not see it"
    return model


def reference_forward(model: PixArtTransformer2DModel, x, t, text, mask) -> np.ndarray:
    """The model on NHWC numpy inputs with t in [0, 1] given as the DDPM timestep 1000 t; output NHWC."""
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2), encoder_hidden_states=torch.from_numpy(text),
                    timestep=torch.from_numpy(t) * 1000, encoder_attention_mask=torch.from_numpy(mask).float()).sample
    return out.permute(0, 2, 3, 1).numpy()
