"""Frozen pretrained text encoders that turn captions into token embeddings."""
from t2ijax.models.text.loading import TextEncoder, load_text_encoder

__all__ = ["TextEncoder", "load_text_encoder"]
