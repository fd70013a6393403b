"""The embedded default: a 1.6M-parameter PRX on 32x32 synthetic shapes, pixel space, CPU.

Run (what `make train` does):
  python -m t2ijax.main --config=configs/shapes_tiny.py --workdir=workdirs/shapes_tiny
Result (2026-11-26, 2-core CPU, fresh clone, docs/benchmarks.md): 9m36s for `make train`
including install; held-out colour 0.985, shape 0.761, position 1.0.
"""
from configs import base


def get_config():
    c = base.get_config()
    c.total_steps = 1600
    # Images/s is flat in the batch size on 2 cores, and steps buy quality: small batches.
    c.data.update(global_batch_size=16, num_train=6000)
    c.model.update(patch_size=4, hidden_size=128, depth=4, num_heads=4)
    # Found by launch/quality_sweep.py (docs/benchmarks.md): together these three lift held-out
    # colour from 0.65 to 1.0 and shape from 0.38 to 0.85 at 1600 steps.
    c.diffusion.shift = 3.0          # PRX's pixel-space shift: more training at high noise, where layout forms
    c.text_encoder.layer = 4         # MiniLM's 4th layer still binds each colour to its own object
    c.optim.update(learning_rate=4e-3, warmup_steps=200, schedule="cosine", final_lr_fraction=0.05,
                   grad_clip_norm=1.0)
    c.checkpoint.every_steps = 400
    c.log.every_steps = 100
    c.sample.every_steps = 800
    c.eval.num_samples = 128
    c.sampler.steps = 25
    return c
