"""Text encoder axis on the CPU demo: a pretrained encoder against two controls.

Everything but config.text_encoder is configs/shapes_tiny.py (same data, seed and schedule). Variants,
chosen after the colon:
  pretrained  all-MiniLM-L6-v2 as trained (shapes_tiny's encoder)
  random      the same architecture, randomly initialised (seed 0) and frozen
  none        no text: every caption becomes one zero token

One variant (as long as the shapes_tiny demo):
  python -m t2ijax.main --config=configs/ablations/text_encoder.py:random --workdir=workdirs/ablations/text_encoder/random
The whole axis, then its report (docs/ablations/README.md):
  python -m t2ijax.ablate --config=configs/ablations/text_encoder.py --workdir=workdirs/ablations/text_encoder
Any other encoder whose Hugging Face-format directory is on the machine (T5, T5Gemma, Qwen3,
CLIP text, BERT) runs the same way, pretrained or random:
  python -m t2ijax.main --config=configs/ablations/text_encoder.py:pretrained \
      --config.text_encoder.path=/path/to/encoder --config.text_encoder.name=NAME \
      --workdir=workdirs/ablations/text_encoder/NAME
Result (2026-11-26, 2-core CPU, docs/ablations/text_encoder.md): held-out colour / shape
pretrained 0.995 / 0.731, random 0.985 / 0.731, none 0.075 / 0.284.
"""
from configs.ablations import variant_config

VARIANTS = {
    "pretrained": {},
    "random": {"text_encoder.init": "random"},
    "none": {"text_encoder.name": "none"},
}


def get_config(variant: str = "pretrained"):
    return variant_config(VARIANTS, variant)
