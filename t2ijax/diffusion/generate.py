"""Text-to-image generation with a trained denoiser: noise -> ODE sampler -> uint8 images."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from t2ijax import sharding
from t2ijax.diffusion.samplers import guided_output, routed_guided_output, sample


def to_uint8(images: jax.Array) -> jax.Array:
    """[-1, 1] floats to uint8 pixels."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class Generator:
    """Generates images for cached text embeddings with the sampler settings of config.sampler;
    compiled once per batch shape.

    With a `mesh`, every batch is split over its data-parallel axes (all hosts of a multi-host
    mesh hold every caption and get every image back); the noise is drawn for the whole batch,
    so the images do not depend on the number of devices.
    """

    def __init__(self, model: nn.Module, space, diffusion: ml_collections.ConfigDict,
                 sampler: ml_collections.ConfigDict, image_shape: tuple[int, int, int], shift: float,
                 negative_text: np.ndarray, negative_mask: np.ndarray, mesh: Mesh | None = None):
        """`negative_text`/`negative_mask` [L, D]/[L] embed config.sampler.negative_prompt; `shift` is
        the time shift the model was trained with (timesteps.time_shift)."""
        self.model = model
        self.mesh = mesh
        self.space = space  # LatentSpace: decodes the model's latents
        # Placed once (replicated over the mesh) and passed to the compiled sampler as an argument.
        self.decoder_params = space.params if mesh is None else jax.device_put(space.params, sharding.replicated(mesh))
        self.diffusion = diffusion
        self.sampler = sampler
        self.image_shape = image_shape
        self.shift = shift
        self.negative_text = jnp.asarray(negative_text, jnp.float32)
        self.negative_mask = jnp.asarray(negative_mask, bool)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _generate(self, params, decoder_params, text, text_mask, rng):
        def apply_fn(x, t, txt, mask, route_rng=None):
            return self.model.apply({"params": params}, x, t, txt, mask, route_rng=route_rng)

        cfg = self.sampler
        guidance, interval = float(cfg.guidance), tuple(map(float, cfg.guidance_interval))
        if cfg.weak_branch == "routed":
            routed_fn = lambda x, t, txt, mask: apply_fn(x, t, txt, mask, jax.random.fold_in(rng, 1))
            output_fn = routed_guided_output(apply_fn, routed_fn, text, text_mask, guidance, interval)
        else:
            output_fn = guided_output(apply_fn, text, text_mask, self.negative_text, self.negative_mask, guidance,
                                      interval)
        noise = jax.random.normal(rng, (text.shape[0],) + self.image_shape)
        latents = sample(output_fn, self.diffusion, noise, cfg.name, cfg.steps, self.shift)
        return to_uint8(self.space.decode(latents, decoder_params))

    def __call__(self, params, text, text_mask, batch_size: int = 128) -> np.ndarray:
        """uint8 images [N, H, W, 3] for N captions, in batches of at most `batch_size` (padded)."""
        images = []
        rng = jax.random.PRNGKey(self.sampler.seed)
        ways = sharding.batch_ways(self.mesh)
        for start in range(0, len(text), batch_size):
            chunk_text = np.asarray(text[start:start + batch_size], np.float32)
            chunk_mask = np.asarray(text_mask[start:start + batch_size], bool)
            n = len(chunk_text)
            width = batch_size if len(text) > batch_size else n  # one compiled shape for every chunk
            pad = -(-width // ways) * ways - n
            if pad:
                chunk_text = np.concatenate([chunk_text, np.repeat(chunk_text[-1:], pad, 0)])
                chunk_mask = np.concatenate([chunk_mask, np.repeat(chunk_mask[-1:], pad, 0)])
            out = self._generate(params, self.decoder_params, self._place(chunk_text), self._place(chunk_mask),
                                 jax.random.fold_in(rng, start))
            images.append(self._fetch(out)[:n])
        return np.concatenate(images)

    def _place(self, array: np.ndarray):
        if self.mesh is None:
            return array
        return jax.make_array_from_callback(array.shape, sharding.batch_sharding(self.mesh), lambda i: array[i])

    def _fetch(self, out: jax.Array) -> np.ndarray:
        if self.mesh is None or out.is_fully_addressable:
            return np.asarray(out)
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))


VIEW_PIXELS = 128  # tiles of sample grids are enlarged to at least this side, to be seen in TensorBoard too
CAPTION_FONT_PIXELS = 11
CAPTION_LINES = 5  # a longer caption is cut, ending in '...' (samples/prompts.txt has it whole)


def view_scale(height: int, width: int) -> int:
    """The whole-number factor that enlarges a `height` x `width` image to at least VIEW_PIXELS on its short side."""
    return max(1, -(-VIEW_PIXELS // min(height, width)))


def _wrapped(text: str, font, width: int) -> list[str]:
    """`text` in lines of at most `width` pixels, at most CAPTION_LINES of them."""
    lines = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] += " ..."
    return lines


def image_grid(images: np.ndarray, columns: int | None = None, captions=None, scale: int = 1) -> np.ndarray:
    """Tiles [N, H, W, C] uint8 images, each enlarged `scale` times (nearest neighbour), into one image with
    2-pixel gaps. With `captions` (one per image), each tile's caption is written under it, wrapped to the
    tile's width and cut after CAPTION_LINES lines."""
    from PIL import Image, ImageDraw, ImageFont

    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    font = ImageFont.load_default(CAPTION_FONT_PIXELS)
    lines = [_wrapped(str(caption), font, w - 2) for caption in captions] if captions is not None else [[]] * n
    line_height = CAPTION_FONT_PIXELS + 2
    cell_h = h + max(len(tile) for tile in lines) * line_height + (2 if captions is not None else 0)
    grid = np.full((rows * (cell_h + 2) + 2, columns * (w + 2) + 2, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[2 + r * (cell_h + 2):2 + r * (cell_h + 2) + h, 2 + col * (w + 2):2 + col * (w + 2) + w] = image
    if captions is None:
        return grid
    canvas = Image.fromarray(grid.squeeze(-1) if c == 1 else grid)
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(lines):
        r, col = divmod(i, columns)
        for k, line in enumerate(tile):
            draw.text((3 + col * (w + 2), 3 + r * (cell_h + 2) + h + k * line_height), line, fill="black", font=font)
    return np.asarray(canvas).reshape(grid.shape)


def generator_at(model: nn.Module, space, config: ml_collections.ConfigDict, sampler: ml_collections.ConfigDict,
                 size: tuple[int, int], negative_text: np.ndarray, negative_mask: np.ndarray,
                 mesh: Mesh | None = None) -> Generator:
    """A Generator of `size` (height, width) pixel images for the run `config`, with the time shift
    of that size's token count (what training used for batches of that size)."""
    from t2ijax.diffusion.timesteps import time_shift
    from t2ijax.models.build import latent_size, num_image_tokens

    height, width = latent_size(config, *size)
    shift = time_shift(config.diffusion, num_image_tokens(config.model, height, width))
    return Generator(model, space, config.diffusion, sampler, (height, width, space.channels), shift,
                     negative_text, negative_mask, mesh)
