"""A whole diffusers PRX pipeline directory in t2ijax: denoiser, text encoder, scheduler settings.

  pipe = load_prx_pipeline("path/to/prx")      # model_index.json, transformer/, text_encoder/, tokenizer/, scheduler/, vae/
  latents = pipe.generate_latents(["a cat"], noise, steps=28, guidance=4.0)  # noise NHWC, t = 1
  images = pipe.decode(latents)                # NHWC in [-1, 1], through the pipeline's VAE
  images = pipe.generate(["a cat"], height=512, width=768, seed=0)  # uint8 NHWC; noise from the seed

Prompts are cleaned as the pipeline does (DeepFloyd-style, t2ijax.models.text.cleaning) and cut
or padded to the tokenizer's model_max_length; the text encoder's last hidden state conditions
the denoiser; sampling is Euler on the scheduler's shifted sigmas (sampler flow_match_euler) with classifier-free guidance
against the negative prompt, then the VAE on latents / scaling_factor + shift_factor, which is
what PRXPipeline does.
"""
import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2ijax import defaults as base
from t2ijax.diffusion.generate import to_uint8
from t2ijax.diffusion.samplers import guided_output, sample
from t2ijax.errors import ConfigError
from t2ijax.interop.checkpoints import local_dir
from t2ijax.interop.diffusers_prx import prx_from_diffusers
from t2ijax.models.autoencoders import load_autoencoder
from t2ijax.models.prx import PRX
from t2ijax.models.text import load_text_encoder
from t2ijax.models.text.encoder import TextEncoder

PIPELINE_CLASSES = ("PRXPipeline", "PRXPixelPipeline")
SCHEDULER = "FlowMatchEulerDiscreteScheduler"


@dataclasses.dataclass(eq=False)  # hashed by identity: jit takes it as a static argument
class PRXPipeline:
    model: PRX
    params: dict
    text_encoder: TextEncoder
    diffusion: ml_collections.ConfigDict  # config.diffusion of the formulation the scheduler implies
    autoencoder: object | None            # the pipeline's VAE (None: a pipeline without one gives latents only)
    directory: Path

    @property
    def shift(self) -> float:
        return self.diffusion.shift

    @functools.partial(jax.jit, static_argnums=(0, 5, 6))
    def _sample(self, params, text, mask, noise, steps: int, guidance: float, negative):
        output_fn = guided_output(lambda x, t, txt, m: self.model.apply({"params": params}, x, t, txt, m),
                                  text, mask, negative[0], negative[1], guidance, (0.0, 1.0))
        return sample(output_fn, self.diffusion, noise, "flow_match_euler", steps, self.shift)

    def generate_latents(self, prompts: list[str], noise: np.ndarray, steps: int = 28, guidance: float = 4.0,
                         negative_prompt: str = "", params: dict | None = None) -> np.ndarray:
        """Latents [B, H, W, C] (NHWC) from `noise` of that shape, one prompt per row."""
        if len(prompts) != len(noise):
            raise ConfigError(f"{len(prompts)} prompts for {len(noise)} noise rows; give one prompt per row")
        text, mask = self.text_encoder.encode(list(prompts))
        negative_text, negative_mask = self.text_encoder.encode([negative_prompt])
        negative = (jnp.asarray(negative_text[0]), jnp.asarray(negative_mask[0]))
        out = self._sample(self.params if params is None else params, jnp.asarray(text), jnp.asarray(mask),
                           jnp.asarray(noise, jnp.float32), steps, float(guidance), negative)
        return np.asarray(out)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Images NHWC in [-1, 1] from latents of `generate_latents`, unscaled by the VAE's own factors."""
        if self.autoencoder is None:
            raise ConfigError(f"{self.directory} has no vae/; this pipeline gives latents only")
        offset, scale = self.autoencoder.own_factors
        return np.asarray(self._decode(self.autoencoder.params, jnp.asarray(latents) / scale + offset))

    def generate(self, prompts: list[str], height: int, width: int, steps: int = 28, guidance: float = 4.0,
                 negative_prompt: str = "", seed: int = 0) -> np.ndarray:
        """Images uint8 [B, height, width, 3] from noise drawn with `seed`, one per prompt."""
        if self.autoencoder is None:
            raise ConfigError(f"{self.directory} has no vae/; use generate_latents")
        cell = self.autoencoder.downsample * self.model.patch_size
        if height % cell or width % cell:
            raise ConfigError(f"{height}x{width} is not a multiple of {cell} (the VAE's downsampling times the "
                              f"patch size); try {height // cell * cell}x{width // cell * cell}")
        shape = (len(prompts), height // self.autoencoder.downsample, width // self.autoencoder.downsample,
                 self.autoencoder.channels)
        noise = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
        images = self.decode(self.generate_latents(prompts, np.asarray(noise), steps, guidance, negative_prompt))
        return np.asarray(to_uint8(images))

    @functools.partial(jax.jit, static_argnums=0)
    def _decode(self, params, latents):
        return self.autoencoder.decode(latents, params)


def _scheduler_shift(directory: Path) -> float:
    path = directory / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; a PRX pipeline directory has a scheduler/")
    config = json.loads(path.read_text())
    if config.get("_class_name") != SCHEDULER:
        raise ConfigError(f"{path} describes a {config.get('_class_name')}; t2ijax samples PRX with {SCHEDULER}")
    if config.get("use_dynamic_shifting"):
        raise ConfigError(f"{path} sets use_dynamic_shifting, which PRXPipeline cannot run (it passes no mu); "
                          "set a fixed shift")
    return float(config.get("shift", 1.0))


def load_prx_pipeline(name_or_path: str, dtype=jnp.float32, text_dtype=jnp.float32) -> PRXPipeline:
    """The PRX pipeline in a diffusers directory (or hub id): see the module docstring."""
    directory = local_dir(str(name_or_path), whole_pipeline=True)
    index = directory / "model_index.json"
    if not index.is_file():
        raise ConfigError(f"{directory} has no model_index.json; give a diffusers PRX pipeline directory "
                          "(prx_from_diffusers reads a transformer directory alone)")
    components = json.loads(index.read_text())
    class_name = components.get("_class_name")
    if class_name not in PIPELINE_CLASSES:
        raise ConfigError(f"{index} describes a {class_name}, not a {' or '.join(PIPELINE_CLASSES)}")
    model, params = prx_from_diffusers(str(directory), dtype=dtype)
    tokenizer_config = directory / "tokenizer" / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        raise ConfigError(f"{tokenizer_config} is missing; a PRX pipeline directory has a tokenizer/")
    max_length = json.loads(tokenizer_config.read_text()).get("model_max_length")
    if not isinstance(max_length, int) or max_length > 1 << 20:
        raise ConfigError(f"{tokenizer_config} sets no usable model_max_length ({max_length!r}); PRX uses 256")
    text_encoder = load_text_encoder(directory / "text_encoder", tokenizer_dir=directory / "tokenizer",
                                     max_length=max_length, dtype=text_dtype, clean="deepfloyd",
                                     label=f"{directory.name}/text_encoder")
    diffusion = base.get_config().diffusion
    diffusion.update(path="rectified_flow", prediction="velocity", shift_mode="fixed",
                     shift=_scheduler_shift(directory))
    has_vae = (components.get("vae") or [None, None])[1] is not None
    autoencoder = load_autoencoder(str(directory / "vae")) if has_vae else None
    return PRXPipeline(model, params, text_encoder, diffusion, autoencoder, directory)
