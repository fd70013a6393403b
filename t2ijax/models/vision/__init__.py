"""Frozen image feature networks for evaluation: Inception-v3 (FID), CLIP and DINOv2 towers."""
