"""diffusers' PRXTransformer2DModel as the reference the Flax PRX is checked against."""
import numpy as np
import torch
from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel


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
