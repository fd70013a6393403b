"""PRX-small (about 1.2B parameters) with the PRX baseline recipe, for accelerators.

Hidden 1792, depth 16, 28 heads, patch 2 on 256 px latents (or patch 32 with a 256-d
bottleneck in pixel space), AdamW lr 1e-4, betas (0.9, 0.95), eps 1e-15, clip 0.2,
1000 warmup steps then constant, caption dropout 0.1, logit-normal t, batch 256.
Until the autoencoder, T5Gemma and real-data issues land it trains on the 64 px synthetic
shapes in pixel space (patch 4: 256 tokens, as 256 px latents with patch 2) with MiniLM text:
  python -m t2ijax.main --config=configs/prx_small.py --workdir=/path/to/prx_small
Not run yet on this project's machines (no accelerator was available).
"""
from configs import base


def get_config():
    c = base.get_config()
    c.total_steps = 100_000
    c.data.resolution = 64
    c.data.global_batch_size = 256
    c.model.update(patch_size=4, dtype="bfloat16", remat_policy="dots")
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.checkpoint.every_steps = 5000
    c.sample.every_steps = 5000
    return c
