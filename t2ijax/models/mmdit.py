"""MMDiT denoiser (Stable Diffusion 3): image and text streams, each with its own weights, joined in one
attention over [image ‖ text] tokens. Numerically equal to diffusers' SD3Transformer2DModel (SD3.0:
no dual-attention layers) when every text token is real.

t2ijax's decisions where SD3 has none: padded text tokens are masked out as attention keys (so their
values never reach the image); without a `pooled` vector the pooled projection reads the mean of the
real text tokens. Initialisation: xavier-uniform kernels and zero biases; the adaLN modulations and the
output projection start at zero (adaLN-Zero, as DiT), so a fresh model predicts 0.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.models.layers import (Dense, FeedForward, RMSNorm, adaln_modulation, masked_attention, masked_mean,
                                  modulate, patchify, sincos_2d, timestep_embedding, unpatchify)
from t2ijax.models.prx import MLPEmbedder
from t2ijax.models.stack import TOKENS, Block, Denoiser


def sd3_positions(max_size: int, base_size: int) -> np.ndarray:
    """The row (and column) positions of SD3's max_size x max_size sin-cos table: index / (max_size / base_size),
    in fp32 as diffusers computes them."""
    return np.arange(max_size, dtype=np.float32) / np.float32(max_size / base_size)


class JointAttention(nn.Module):
    """Attention over [image ‖ text] tokens, each stream with its own q/k/v and output projections and
    (qk_norm) RMSNorms on its per-head q and k. Padded text tokens are masked out as keys.

    context_pre_only: only the image tokens query (the text stream ends here) and no text output; the
    text query projection and norm still exist, unused, as in diffusers' last block.
    """

    num_heads: int
    head_dim: int
    qk_norm: bool
    context_pre_only: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    def _qkv(self, x, name: str, norms: tuple[str, str]):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = Dense((3, self.num_heads, self.head_dim), ("embed", None, "heads", "kv"), name=name, **kw)(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.qk_norm:
            q, k = (RMSNorm(eps=1e-6, axis_name="kv", name=norm, **kw)(y) for norm, y in zip(norms, (q, k)))
        return q, k, v

    def _out(self, x, name: str):
        return Dense(self.num_heads * self.head_dim, ("heads", "kv", "embed"), n_in=2, name=name,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)

    @nn.compact
    def __call__(self, img, txt, text_mask):
        b, n = img.shape[:2]
        img_q, img_k, img_v = self._qkv(img, "img_qkv", ("norm_q", "norm_k"))
        txt_q, txt_k, txt_v = self._qkv(txt, "txt_qkv", ("norm_added_q", "norm_added_k"))
        q = img_q if self.context_pre_only else jnp.concatenate([img_q, txt_q], axis=1)
        k = jnp.concatenate([img_k, txt_k], axis=1)
        v = jnp.concatenate([img_v, txt_v], axis=1)
        key_mask = jnp.concatenate([jnp.ones((b, n), bool), text_mask.astype(bool)], axis=1)
        out = masked_attention(q, k, v, key_mask, self.attention_impl)
        img_out = self._out(out[:, :n], "img_out")
        return img_out, (None if self.context_pre_only else self._out(out[:, n:], "txt_out"))


class JointBlock(Block):
    """SD3's JointTransformerBlock: adaLN-Zero (shift, scale, gate for attention and for the MLP) on both
    streams, joint attention, then a GELU MLP per stream. context_pre_only (the last block): the text
    stream only feeds the attention, modulated by AdaLayerNormContinuous's (scale, shift), and is passed
    on unchanged. Maps ((img, txt), temb, text_mask) -> ((img, txt), None) so that nn.scan can carry
    both streams."""

    qk_norm: bool = False
    context_pre_only: bool = False

    def _modulation(self, temb, n: int, name: str):
        return adaln_modulation(temb, n, name, self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)

    def _mlp(self, x, shift, scale, gate, name: str):
        mlp = FeedForward(self.hidden_size, int(self.hidden_size * self.mlp_ratio), self.dtype, self.param_dtype,
                          name=name)
        return (x + gate * mlp(modulate(x, shift, scale, self.dtype))).astype(self.dtype)

    @nn.compact
    def __call__(self, carry, temb, text_mask):
        img, txt = (nn.with_logical_constraint(x, TOKENS) for x in carry)
        shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = self._modulation(temb, 6, "img_mod")
        if self.context_pre_only:
            txt_scale, txt_shift = self._modulation(temb, 2, "txt_mod")
        else:
            txt_shift, txt_scale, txt_gate, txt_mlp_shift, txt_mlp_scale, txt_mlp_gate = self._modulation(
                temb, 6, "txt_mod")

        attn = JointAttention(self.num_heads, self.hidden_size // self.num_heads, self.qk_norm,
                              self.context_pre_only, self.dtype, self.param_dtype, self.attention_impl,
                              name="attention")
        img_attn, txt_attn = attn(modulate(img, shift, scale, self.dtype),
                                  modulate(txt, txt_shift, txt_scale, self.dtype), text_mask)
        img = (img + gate * img_attn).astype(self.dtype)
        img = self._mlp(img, mlp_shift, mlp_scale, mlp_gate, "img_mlp")
        if not self.context_pre_only:
            txt = (txt + txt_gate * txt_attn).astype(self.dtype)
            txt = self._mlp(txt, txt_mlp_shift, txt_mlp_scale, txt_mlp_gate, "txt_mlp")
        return (nn.with_logical_constraint(img, TOKENS), nn.with_logical_constraint(txt, TOKENS)), None


class MMDiT(Denoiser):
    """SD3's MMDiT; fields mirror diffusers' SD3Transformer2DModel config (depth = num_layers,
    hidden_size = num_attention_heads * attention_head_dim, context_in_dim = joint_attention_dim).

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise; SD3's timestep is t * 1000), text
    [B,L,context_in_dim], text_mask [B,L] bool (True = real token), route_rng, pooled
    [B,pooled_projection_dim] or None) -> [B,H,W,C].

    Blocks 0..depth-2 are uniform ("blocks", scanned when scan_layers); the last one, whose text stream
    only feeds its attention, is "final_block". Image tokens get the centre crop of a fixed
    pos_embed_max_size^2 sin-cos table; an image side over pos_embed_max_size patches is an error.
    """

    pooled_projection_dim: int = 2048
    mlp_ratio: float = 4.0  # diffusers' PixArt, SD3 and Flux, and U-ViT's
    qk_norm: bool = False  # RMSNorm on per-head q and k (diffusers' qk_norm="rms_norm")
    sample_size: int = 128  # the latent side the sin-cos positions are scaled for
    pos_embed_max_size: int = 192

    def _check(self, x, pooled):
        if self.depth < 1:
            raise ValueError(f"depth {self.depth} must be at least 1")
        self._check_common(x)
        h, w = x.shape[1:3]
        if max(h, w) // self.patch_size > self.pos_embed_max_size:
            raise ValueError(f"image {h}x{w} is over pos_embed_max_size {self.pos_embed_max_size} patches "
                             f"of {self.patch_size} on a side")
        if pooled is None and self.pooled_projection_dim != self.context_in_dim:
            raise ValueError(f"without a pooled vector the model pools the text, which needs pooled_projection_dim "
                             f"{self.pooled_projection_dim} == context_in_dim {self.context_in_dim}")

    def _run(self, img, txt, start: int, end: int, temb, text_mask):
        """Blocks start..end-1 on (img, txt): the uniform "blocks" 0..depth-2, then "final_block"."""
        uniform, args = self.depth - 1, (temb, text_mask)
        fields = lambda last: self.block_fields(qk_norm=self.qk_norm, context_pre_only=last)
        if self.is_initializing():
            carry = (img, txt)
            if uniform:
                carry = self.init_blocks(JointBlock, fields(False), "blocks", uniform, carry, *args)
            return self.init_blocks(JointBlock, fields(True), "final_block", 1, carry, *args)
        carry = self.apply_blocks(JointBlock(**fields(False)), "blocks", min(start, uniform), min(end, uniform),
                                  (img, txt), *args)
        if end == self.depth:
            carry = self.apply_blocks(JointBlock(**fields(True)), "final_block", 0, 1, carry, *args)
        return carry

    def _positions(self, grid_h: int, grid_w: int) -> jax.Array:
        """The centre grid_h x grid_w crop of SD3's pos_embed_max_size^2 table, whose positions are patch indices
        scaled to span sample_size // patch_size (in fp32, as diffusers' get_2d_sincos_pos_embed)."""
        positions = sd3_positions(self.pos_embed_max_size, self.sample_size // self.patch_size)
        top, left = (self.pos_embed_max_size - grid_h) // 2, (self.pos_embed_max_size - grid_w) // 2
        table = sincos_2d(positions[top:top + grid_h], positions[left:left + grid_w], self.hidden_size)
        return jnp.asarray(table, self.dtype)

    @nn.compact
    def __call__(self, x, t, text, text_mask, route_rng=None, pooled=None):
        if self.is_initializing() and pooled is None and self.pooled_projection_dim != self.context_in_dim:
            pooled = jnp.zeros((x.shape[0], self.pooled_projection_dim))  # init needs only shapes; apply checks
        self._check(x, pooled)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, c = x.shape
        p = self.patch_size

        img = Dense(self.hidden_size, ("conv_in", "embed"), name="img_in", **kw)(patchify(x, p).astype(self.dtype))
        img = img + self._positions(h // p, w // p)[None]
        txt = Dense(self.hidden_size, (None, "embed"), name="txt_in", **kw)(text.astype(self.dtype))
        txt = nn.with_logical_constraint(txt, TOKENS)

        if pooled is None:
            pooled = masked_mean(text, text_mask)
        temb = MLPEmbedder(self.hidden_size, name="time_in", **kw)(timestep_embedding(t.astype(jnp.float32) * 1000.0))
        temb = temb + MLPEmbedder(self.hidden_size, name="pooled_in", **kw)(pooled.astype(self.dtype))

        run = lambda img, txt, start, end, rope: self._run(img, txt, start, end, temb, text_mask)
        img, _ = self.routed_blocks(img, txt, None, route_rng, (h // p, w // p), run, self.depth)

        scale, shift = adaln_modulation(temb, 2, "final_mod", self.hidden_size, **kw)  # AdaLayerNormContinuous's order
        out = Dense(c * p * p, ("embed", "conv_in"), zero_init=True, name="final_linear",
                    **kw)(modulate(img, shift, scale, self.dtype))
        return unpatchify(out, p, h, w, channels_last=True).astype(x.dtype)
