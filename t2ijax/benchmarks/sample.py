"""The sample suite: the denoiser's sampling loop (config.sampler: its steps and guidance) on random
text, in latent space: no text encoding and no decoding, as the reference's loop is timed."""
import time

import jax

from t2ijax.benchmarks.synthetic import synthetic
from t2ijax.benchmarks.timing import seconds_per_call
from t2ijax.diffusion.samplers import guided_output, network_evaluations, sample


def sample_suite(config, repeats: int) -> dict:
    s = synthetic(config)
    cfg = config.sampler
    guidance, interval = float(cfg.guidance), tuple(map(float, cfg.guidance_interval))

    @jax.jit
    def generate(params, noise, text, text_mask):
        apply_fn = lambda x, t, txt, mask: s.model.apply({"params": params}, x, t, txt, mask)
        output_fn = guided_output(apply_fn, text, text_mask, *s.negative_prompt, guidance, interval)
        return sample(output_fn, config.diffusion, noise, cfg.name, cfg.steps, s.shift)

    args = (s.state.params, s.batch["x0"], s.batch["text"], s.batch["text_mask"])
    start = time.perf_counter()
    compiled = generate.lower(*args).compile()
    compile_s = time.perf_counter() - start
    seconds = seconds_per_call(lambda _: compiled(*args), repeats)
    return {"images_per_s": s.batch_size / seconds, "loop_ms": 1e3 * seconds,
            "sampler": cfg.name, "sampler_steps": cfg.steps, "guidance": guidance,
            "network_evaluations": network_evaluations(cfg.name, cfg.steps, guidance), "compile_s": compile_s}
