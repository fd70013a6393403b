"""The PyTorch reference: diffusers' PRXTransformer2DModel at a t2ijax PRX's configuration, timed on the
same work as the JAX suites (training steps with AdamW; PRXPipeline's denoising loop), eager or under
torch.compile, on the GPU when torch sees one.

torch and diffusers are test-only dependencies of t2ijax: they are imported inside the functions.
"""
import os
import time

from t2ijax import defaults as base
from t2ijax.errors import ConfigError
from t2ijax.interop.prx_weights import CLASS_NAME, CONFIG_FIELDS
from t2ijax.models.prx import PRX

# PRX fields that diffusers' model has no counterpart for, each with the only value it matches.
_FIXED_IN_DIFFUSERS = {"pos_embed": "rope_2d", "resolution_tokens": False, "routing": "none", "repa_projector": "none"}


def reference_fields(model: PRX) -> dict:
    """The PRXTransformer2DModel keyword arguments of the same architecture as `model`."""
    for field, value in _FIXED_IN_DIFFUSERS.items():
        if getattr(model, field) != value:
            raise ConfigError(f"diffusers' {CLASS_NAME} has no {field}={getattr(model, field)!r}; "
                              f"compare it against a PRX with {field}={value!r}")
    return {**{field: getattr(model, field) for field in CONFIG_FIELDS}, "axes_dim": list(model.rope_axes_dim)}


def parameter_count(fields: dict) -> int:
    """Parameters of PRXTransformer2DModel(**fields), counted without allocating them."""
    import torch
    from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel

    with torch.device("meta"):
        return sum(p.numel() for p in PRXTransformer2DModel(**fields).parameters())


def denoise(transformer, scheduler, noise, text, text_mask, uncond_text, uncond_mask, guidance: float, steps: int):
    """PRXPipeline's denoising loop from latents `noise` (NCHW): the scheduler's `steps` timesteps, classifier-free
    guidance with the unconditional and conditional batches in one forward when guidance > 1, the scheduler's
    Euler step. It passes one timestep per row, where PRXPipeline passes two under guidance and so fails on
    batches of more than one image (diffusers 0.42.1)."""
    import torch

    guided = guidance > 1
    text_in = torch.cat([uncond_text, text]) if guided else text
    mask_in = torch.cat([uncond_mask, text_mask]) if guided else text_mask
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise
    for t in scheduler.timesteps:
        latents_in = torch.cat([latents, latents]) if guided else latents
        t_in = (t.float() / scheduler.config.num_train_timesteps).repeat(latents_in.shape[0])
        velocity = transformer(latents_in, t_in, text_in, mask_in, return_dict=False)[0]
        if guided:
            uncond, cond = velocity.chunk(2)
            velocity = uncond + guidance * (cond - uncond)
        latents = scheduler.step(velocity, t, latents).prev_sample
    return latents


def reference_train(fields: dict, shapes: dict, steps: int, compiled: bool, threads: int | None = None,
                    dtype: str = "float32") -> dict:
    """Times `steps` rectified-flow training steps (t ~ U(0, 1), x_t = (1 - t) x0 + t eps, MSE against eps - x0,
    backward, t2ijax's default gradient clipping and AdamW from configs/base.py) on fixed random latents and text.

    `shapes`: batch_size, latent_size, latent_channels, text_length, text_dim. Two untimed warm-up steps come
    first; under torch.compile (of the model: forward and backward; the optimizer runs eager) compile_s is the
    first step's seconds less a timed step's. torch runs `threads` CPU threads (None: os.cpu_count()).
    `dtype` (config.model.dtype) is the compute dtype: bfloat16 runs the model under torch.autocast over
    float32 weights, as t2ijax computes in model.dtype over float32 parameters.
    """
    import torch

    device = _setup(threads)
    model, forward = _model(fields, device, compiled)
    model.train()
    optim = base.get_config().optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.learning_rate, betas=(optim.b1, optim.b2),
                                  eps=optim.eps, weight_decay=optim.weight_decay)
    x0, text, mask = _inputs(shapes, device)

    def step():
        t = torch.rand(x0.shape[0], device=device)
        noise = torch.randn_like(x0)
        x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        with autocast(device, dtype):
            velocity = forward(x_t, t, text, mask, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(velocity.float(), noise - x0)
        loss.backward()
        if optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    first_s = _seconds(step, device)
    _seconds(step, device)
    seconds = _seconds(lambda: [step() for _ in range(steps)], device)
    return dict(images_per_s=shapes["batch_size"] * steps / seconds, step_ms=1000 * seconds / steps,
                compile_s=first_s - seconds / steps if compiled else None, dtype=dtype, **_environment(model, device))


def reference_sample(fields: dict, shapes: dict, sample_steps: int, guidance: float, repeats: int, compiled: bool,
                     threads: int | None = None, shift: float = 1.0, dtype: str = "float32") -> dict:
    """Times `repeats` denoising loops (`denoise`) of `sample_steps` steps on a batch of `shapes` (as in
    reference_train, as `threads`, in `dtype`), after one untimed warm-up loop; no text encoder, no VAE decode.

    The scheduler is FlowMatchEulerDiscreteScheduler(shift=shift), a fixed shift as PRXPipeline needs (it passes
    no mu for a dynamic one); 1.0 is diffusers' default and config.diffusion.shift's. Under torch.compile,
    compile_s is the warm-up loop's seconds less a timed loop's.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    device = _setup(threads)
    model, forward = _model(fields, device, compiled)
    model.eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    noise, text, mask = _inputs(shapes, device)
    uncond_text = torch.randn_like(text)
    loop = lambda: denoise(forward, scheduler, noise, text, mask, uncond_text, mask, guidance, sample_steps)
    with torch.no_grad(), autocast(device, dtype):
        first_s = _seconds(loop, device)
        seconds = _seconds(lambda: [loop() for _ in range(repeats)], device)
    return dict(images_per_s=shapes["batch_size"] * repeats / seconds, loop_ms=1000 * seconds / repeats,
                compile_s=first_s - seconds / repeats if compiled else None, shift=shift, dtype=dtype,
                **_environment(model, device))


def reference_attention(inputs: dict, repeats: int, threads: int | None = None, dtype: str = "float32") -> dict:
    """torch's scaled_dot_product_attention on the attention suite's inputs (benchmarks/attention.py: q, k, v
    [B, L, heads, D], key_mask [B, Lk], grad): forward and forward + backward milliseconds, after one untimed
    call of each."""
    import torch

    device = _setup(threads)
    heads_first = lambda name: torch.tensor(inputs[name], device=device).to(getattr(torch, dtype)).transpose(1, 2)
    q, k, v = (heads_first(name).requires_grad_(True) for name in ("q", "k", "v"))
    grad = heads_first("grad")
    mask = torch.tensor(inputs["key_mask"], device=device)[:, None, None, :]
    attention = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def forward():
        with torch.no_grad():
            attention()

    times = {}
    for name, work in (("forward_ms", forward), ("forward_backward_ms",
                                                 lambda: torch.autograd.grad(attention(), (q, k, v), grad))):
        _seconds(work, device)
        times[name] = 1000 * _seconds(lambda: [work() for _ in range(repeats)], device) / repeats
    return dict(**times, threads=torch.get_num_threads(), device=str(device), torch=torch.__version__)


def autocast(device, dtype: str):
    """torch.autocast to bfloat16 on `device` when `dtype` (config.model.dtype) is bfloat16; off for float32."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def _setup(threads: int | None):
    """The device to run on, after giving torch `threads` CPU threads (None: one per core)."""
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model(fields: dict, device, compiled: bool):
    """(model, what to call): PRXTransformer2DModel(**fields) in float32 from seed 0, itself or torch.compile'd."""
    import torch
    from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel

    torch.manual_seed(0)
    model = PRXTransformer2DModel(**fields).to(device)  # float32, torch's default
    return model, torch.compile(model) if compiled else model


def _inputs(shapes: dict, device):
    """(latents [B, C, S, S], text [B, L, D], text mask of ones [B, L])."""
    import torch

    b, length = shapes["batch_size"], shapes["text_length"]
    latents = torch.randn(b, shapes["latent_channels"], shapes["latent_size"], shapes["latent_size"], device=device)
    text = torch.randn(b, length, shapes["text_dim"], device=device)
    return latents, text, torch.ones(b, length, dtype=torch.bool, device=device)


def _seconds(work, device) -> float:
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    work()
    sync()
    return time.perf_counter() - start


def _environment(model, device) -> dict:
    import torch

    return dict(parameters=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads(),
                device=str(device), torch=torch.__version__)
