"""The discriminative CPU benchmark: shapes_tiny's model, trained with Muon, on compose scenes (t2ijax/data/compose.py).

1-4 objects on a 3x3 grid, six shapes, eight colours, relations, counts and bindings with distractors; held-out
combinations in validation, scored per GenEval category by compose's exact detector. Meant to sit mid-range
(overall 0.3-0.7) after about 10 minutes of training on a 2-core CPU, so that an ablation can move it either
way; not there yet: overall 0.112 +- 0.017 at these 3600 steps, 0.471 +- 0.024 at 4x (seed 0, 2026-12-08,
docs/benchmarks.md, "The compose benchmark's calibration"). Muon at the demo's learning rate is the one change
found that makes this model draw distinct shapes at 32 px (per-object shape 0.33 at 5400 steps against AdamW's
0.17 at 6300), so it is the recipe here.

  python -m t2ijax.main --config=configs/compose_tiny.py --workdir=workdirs/compose_tiny
"""
from configs import shapes_tiny


def get_config():
    c = shapes_tiny.get_config()
    c.data.update(name="compose", num_validation=512,
                  captions=(("caption_long", 0.7), ("caption_short", 0.3)))  # evaluation reads the first: long
    c.text_encoder.max_length = 48  # the longest long caption is 46 MiniLM tokens
    c.optim.update(name="muon", muon_learning_rate=4e-3)  # AdamW (4e-3) takes all but the blocks' matrices
    c.total_steps = 3600  # about 10 minutes at 6.2 steps/s on the 2-core box (2026-12-08)
    c.checkpoint.every_steps = 1800
    c.log.every_steps = 100
    c.sample.every_steps = 0
    c.eval.update(every_steps=1800, num_samples=300)  # 50 prompts per category
    return c
