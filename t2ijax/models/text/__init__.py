"""Frozen text encoders (BERT, T5, T5Gemma, Qwen3, CLIP text) that turn captions into token embeddings."""
from t2ijax.models.text.encoder import NoText, TextEncoder
from t2ijax.models.text.loading import load_text_encoder, load_text_model, text_encoder_from_config

__all__ = ["NoText", "TextEncoder", "load_text_encoder", "load_text_model", "text_encoder_from_config"]
