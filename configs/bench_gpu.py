"""PRX-small (configs/prx_small.py: hidden 1792, depth 16, 28 heads, about 1.2B parameters) at 256 px
for an accelerator: bfloat16 compute, 16-channel 32x32 latents with patch 2 (256 image tokens), 256
text tokens of T5Gemma's 2304 dims, a global batch of 32 (on N devices pass --config.bench.batch_size=32N to
keep 32 per device).

  python -m t2ijax.bench --config=configs/bench_gpu.py --suite=train,sample,compile

Not run yet: no accelerator has been lent to the tasks that built the bench.
"""
from configs import prx_small


def get_config():
    c = prx_small.get_config()
    c.model.update(patch_size=2, remat_policy="none")  # attention_impl auto: cuDNN's kernel on a GPU, in bfloat16
    c.bench.update(batch_size=32, latent_size=32, latent_channels=16, text_length=256,
                   text_dim=2304, matmul_size=8192)
    c.sampler.update(name="euler", steps=28, guidance=4.0)
    return c
