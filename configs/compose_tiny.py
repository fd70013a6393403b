"""The discriminative CPU benchmark: shapes_tiny's model and recipe on compose scenes (t2ijax/data/compose.py).

1-4 objects on a 3x3 grid, six shapes, eight colours, relations, counts and bindings with distractors; held-out
combinations in validation, scored per GenEval category by compose's exact detector. Meant to sit mid-range
(overall 0.3-0.7) after about 10 minutes of training on a 2-core CPU, so that an ablation can move it either
way; not there yet: 0.139 +- 0.018 at these 6300 steps, shapes unlearned (docs/benchmarks.md, "The compose
benchmark's calibration").

  python -m t2ijax.main --config=configs/compose_tiny.py --workdir=workdirs/compose_tiny
"""
from configs import shapes_tiny


def get_config():
    c = shapes_tiny.get_config()
    c.data.update(name="compose", num_validation=512,
                  captions=(("caption_long", 0.7), ("caption_short", 0.3)))  # evaluation reads the first: long
    c.text_encoder.max_length = 48  # the longest long caption is 46 MiniLM tokens
    c.total_steps = 6300  # about 10 minutes at 10.5 steps/s on the 2-core box
    c.checkpoint.every_steps = 2100
    c.log.every_steps = 100
    c.sample.every_steps = 0
    c.eval.update(every_steps=2100, num_samples=300)  # 50 prompts per category
    return c
