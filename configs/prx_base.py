"""PRX-base (about 7B parameters): PRX-small's recipe at hidden 3584, depth 24.

DESIGN.md gives PRX-base as 3584 x 24; the head count is ours: 28 heads of 128 (PRX-small has 28
of 64). Like configs/prx_small.py it trains on the 64 px synthetic shapes in pixel space (patch 4:
256 tokens) with MiniLM text until real data lands. Plan its memory before renting the hardware:
  python -m t2ijax.plan --config=configs/prx_base.py --devices=64 --mesh=fsdp:64
Not trained yet (no accelerator was available); planned numbers are in docs/scaling.md.
"""
from configs import prx_small


def get_config():
    c = prx_small.get_config()
    c.model.update(hidden_size=3584, depth=24, num_heads=28)
    return c
