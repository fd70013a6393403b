"""The CPU benchmark model of docs/benchmarks.md: a PRX of 20.7M parameters (hidden 384, depth 6,
6 heads) on 16-channel 32x32 latents (256 image tokens) with 64 text tokens of 384 dims, batch 16,
sampled with 28 Euler steps and guidance 4 (config.bench holds the input shapes).

  make bench    # = python -m t2ijax.bench --config=configs/bench_cpu.py --suite=train,sample,attention

Layers are unrolled: on XLA's CPU backend a scan copies every layer's saved activations into stacked
buffers and back (about a quarter of the step, docs/benchmarks.md), and at depth 6 unrolling costs a
second of compile time. The compile suite's target is about the scan: run it with
--config.model.scan_layers=True.

The data suite needs prepared data: run it on a training config (configs/shapes_tiny.py).
"""
from configs import shapes_tiny


def get_config():
    c = shapes_tiny.get_config()
    c.model.update(patch_size=2, hidden_size=384, depth=6, num_heads=6, mlp_ratio=3.5, scan_layers=False)
    c.sampler.update(name="euler", steps=28, guidance=4.0)
    return c
