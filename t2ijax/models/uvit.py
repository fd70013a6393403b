"""U-ViT denoiser (Bao et al. 2023, "All are Worth Words"; the text-to-image variant).

Everything is a token of one sequence, [time ‖ text ‖ image patches], run through pre-LN transformer
blocks with no adaLN: depth // 2 in-blocks, a mid-block, depth // 2 out-blocks; out-block j first merges
its input with in-block (depth // 2 - 1 - j)'s output by Linear(concat(x, skip)), the long skip. A final
LayerNorm and linear map read the image tokens back into patches, and a 3x3 convolution smooths them.

Initialisation as the paper's code: linear kernels and learned positions from N(0, 0.02) (timm's
trunc_normal_(std=.02) cuts at +-2, a hundred standard deviations out), zero biases, LayerNorms at
identity; the output is not zero at the start.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.models.layers import Dense, layer_norm, masked_attention, patchify, timestep_embedding, unpatchify
from t2ijax.models.prx import LearnedPositions
from t2ijax.models.stack import REMAT_POLICIES, TOKENS, Block, Denoiser

INIT = nn.initializers.normal(0.02)


class LayerNorm(nn.Module):
    """LayerNorm with a learned scale and bias (torch's default eps), statistics in fp32."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        param = lambda name, init: self.param(name, nn.with_logical_partitioning(init, ("embed",)),
                                              (x.shape[-1],), self.param_dtype).astype(jnp.float32)
        scale, bias = param("scale", nn.initializers.ones), param("bias", nn.initializers.zeros)
        return (layer_norm(x, self.eps) * scale + bias).astype(self.dtype)


class UViTBlock(Block):
    """Pre-LN transformer block over the whole sequence; with `long_skip`, Linear(concat(x, skip)) first.

    Returns (x, None), nn.scan's (carry, per-layer output).
    """

    long_skip: bool = False

    @nn.compact
    def __call__(self, x, skip, key_mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=INIT)
        x = nn.with_logical_constraint(x, TOKENS)
        if self.long_skip:
            x = Dense(self.hidden_size, ("mlp", "embed"), name="skip_linear", **kw)(
                jnp.concatenate([x, skip.astype(x.dtype)], axis=-1))

        heads = (self.num_heads, self.hidden_size // self.num_heads)
        h = LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm1")(x)
        qkv = Dense((3, *heads), ("embed", None, "heads", "kv"), use_bias=False, name="qkv", **kw)(h)
        out = masked_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], key_mask, self.attention_impl)
        x = x + Dense(self.hidden_size, ("heads", "kv", "embed"), n_in=2, name="proj", **kw)(out)

        h = LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm2")(x)
        h = Dense(int(self.hidden_size * self.mlp_ratio), ("embed", "mlp"), name="fc1", **kw)(h)
        x = x + Dense(self.hidden_size, ("mlp", "embed"), name="fc2", **kw)(nn.gelu(h, approximate=False))
        return nn.with_logical_constraint(x.astype(self.dtype), TOKENS), None


class UViT(Denoiser):
    """U-ViT text-to-image denoiser.

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise), text [B,L,context_in_dim], text_mask [B,L]
    bool, True = real token) -> [B,H,W,C]. t enters as the sinusoid of t * time_factor (the scale of the
    paper's 1000 discrete steps), of width hidden_size, through an MLP when mlp_time_embed. Padded text
    tokens are masked as keys everywhere, so they change nothing. Positions: a learned table for the
    time and text tokens (text_len rows for text, L <= text_len) and a learned pos_grid x pos_grid
    table for the image tokens, resized bilinearly to each token grid, so any H, W work.

    depth counts every transformer block: depth // 2 in-blocks, a mid-block when depth is odd (the paper's
    U-ViT-S has depth 13), depth // 2 out-blocks. REPA's capture_layer counts blocks in that running
    order (t2ijax/models/stack.py). No token routing: it would break the long skips.
    """

    text_len: int = 77
    mlp_ratio: float = 4.0  # diffusers' PixArt, SD3 and Flux, and U-ViT's
    mlp_time_embed: bool = False
    final_conv: bool = True
    time_factor: float = 1000.0
    time_max_period: float = 10000.0
    pos_grid: int = 16  # side of the learned image position table (the training grid)

    @property
    def num_skips(self) -> int:
        """In-blocks, each feeding the mirrored out-block."""
        return self.depth // 2

    def _check_config(self, x, text):
        if self.depth < 2:
            raise ValueError(f"U-ViT depth {self.depth} must be at least 2: depth // 2 in-blocks, a mid-block when "
                             "depth is odd, and depth // 2 out-blocks")
        if self.routing != "none":
            raise ValueError(f"U-ViT takes no token routing ({self.routing}): routed tokens would miss their "
                             f"long skips")
        self._check_common(x)
        if self.pos_grid <= 0:
            raise ValueError(f"U-ViT needs pos_grid > 0 (its learned image positions), got {self.pos_grid}")
        if text.shape[1] > self.text_len:
            raise ValueError(f"{text.shape[1]} text tokens, more than U-ViT's text_len {self.text_len}")

    def _init_blocks(self, x, key_mask):
        """Creates every block's params (in- and out-blocks stacked over "layers" when scanned). Only their
        shapes matter here: the out-blocks are created with x standing in for their skips."""
        x = self.init_blocks(UViTBlock, self.block_fields(long_skip=False), "in_blocks", self.num_skips, x, None,
                             key_mask)
        if self.depth % 2:
            x, _ = UViTBlock(**self.block_fields(long_skip=False), name="mid_block")(x, None, key_mask)
        self.init_blocks(UViTBlock, self.block_fields(long_skip=True), "out_blocks", self.num_skips, x, x, key_mask)

    def _layer(self, long_skip: bool, key_mask):
        """A block as a function (x, skip, params) -> x, rematerialised by remat_policy."""
        block = UViTBlock(**self.block_fields(long_skip=long_skip))
        layer = lambda x, skip, params: block.apply({"params": params}, x, skip, key_mask)[0]
        if self.remat_policy == "none":
            return layer
        return jax.checkpoint(layer, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=not self.scan_layers)

    def _run_stack(self, name: str, x, skips, start: int, end: int, key_mask):
        """Blocks start..end-1 of the in- or out-block stack `name`, params sliced from this module's.
        Out-blocks take `skips` [end - start, B, S, D], one each in order, and return (x, None); in-blocks
        return (x, their outputs stacked [end - start, B, S, D])."""
        out_blocks = name == "out_blocks"
        layer = self._layer(out_blocks, key_mask)
        params = self.variables["params"]
        if self.scan_layers:
            def step(x, skip_and_params):
                x = layer(x, *skip_and_params)
                return x, None if out_blocks else x

            return jax.lax.scan(step, x, (skips, jax.tree.map(lambda p: p[start:end], params[name])))
        outputs = []
        for i in range(start, end):
            x = layer(x, skips[i - start] if out_blocks else None, params[f"{name}_{i}"])
            outputs.append(x)
        return x, None if out_blocks else jnp.stack(outputs)

    def _run_blocks(self, x, skips, start: int, end: int, key_mask):
        """Blocks start..end-1 in running order (in-blocks 0..k-1, the mid-block k when depth is odd, then the
        out-blocks) on the token sequence x. `skips` [n, B, S, D] holds the outputs of the in-blocks run so far, in order:
        in-blocks push theirs on its end and each out-block pops the last one. Returns (x, skips)."""
        k, mid = self.num_skips, self.depth % 2
        clip = lambda i: min(max(i, 0), k)
        if clip(start) < clip(end):
            x, pushed = self._run_stack("in_blocks", x, None, clip(start), clip(end), key_mask)
            skips = jnp.concatenate([skips, pushed.astype(skips.dtype)])
        if mid and start <= k < end:
            x = self._layer(False, key_mask)(x, None, self.variables["params"]["mid_block"])
        first, stop = clip(start - k - mid), clip(end - k - mid)
        if first < stop:
            popped = skips[len(skips) - (stop - first):][::-1]
            skips = skips[:len(skips) - (stop - first)]
            x, _ = self._run_stack("out_blocks", x, popped, first, stop, key_mask)
        return x, skips

    def _tokens(self, x, t, text):
        """[time ‖ text ‖ image] tokens with their positions added: [B, 1 + L + N, hidden]."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, _ = x.shape
        grid = (h // self.patch_size, w // self.patch_size)
        img = Dense(self.hidden_size, ("conv_in", "embed"), kernel_init=INIT, name="patch_embed", **kw)(
            patchify(x, self.patch_size).astype(self.dtype))
        img = img + LearnedPositions(self.pos_grid, self.hidden_size, self.param_dtype, name="pos_embed")(
            *grid).astype(self.dtype)

        time = timestep_embedding(t, self.hidden_size, scale=self.time_factor, max_period=self.time_max_period)
        time = time.astype(self.dtype)
        if self.mlp_time_embed:
            time = Dense(4 * self.hidden_size, ("embed", "mlp"), kernel_init=INIT, name="time_embed_0", **kw)(time)
            time = Dense(self.hidden_size, ("mlp", "embed"), kernel_init=INIT, name="time_embed_1", **kw)(
                nn.silu(time))
        txt = Dense(self.hidden_size, (None, "embed"), kernel_init=INIT, name="context_embed", **kw)(
            text.astype(self.dtype))
        extras = jnp.concatenate([time[:, None], txt], axis=1)
        table = self.param("extras_pos_embed", nn.with_logical_partitioning(INIT, (None, "embed")),
                           (1 + self.text_len, self.hidden_size), self.param_dtype)
        extras = extras + table[:extras.shape[1]].astype(self.dtype)[None]
        return jnp.concatenate([extras, img], axis=1)

    @nn.compact
    def __call__(self, x, t, text, text_mask, route_rng=None, pooled=None, guidance=None):
        self._check_config(x, text)
        if pooled is not None or guidance is not None:
            raise ValueError("U-ViT takes no pooled text vector and no guidance input")
        b, h, w, c = x.shape
        n_extras = 1 + text.shape[1]
        tokens = nn.with_logical_constraint(self._tokens(x, t, text), TOKENS)
        key_mask = jnp.concatenate([jnp.ones((b, 1), bool), text_mask.astype(bool),
                                    jnp.ones((b, tokens.shape[1] - n_extras), bool)], axis=1)

        def run(img, state, start, end, rope):
            """Blocks start..end-1 on [extras ‖ img]; state = (extras, skips pushed and not yet popped)."""
            extras, skips = state
            x = jnp.concatenate([extras, img], axis=1)
            if self.is_initializing():
                self._init_blocks(x, key_mask)
            x, skips = self._run_blocks(x, skips, start, end, key_mask)
            return x[:, n_extras:], (x[:, :n_extras], skips)

        no_skips = jnp.zeros((0, *tokens.shape), tokens.dtype)
        img, _ = self.routed_blocks(tokens[:, n_extras:], (tokens[:, :n_extras], no_skips), None, route_rng,
                                    (h // self.patch_size, w // self.patch_size), run, self.depth)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        img = LayerNorm(name="norm", **kw)(img)
        out = Dense(c * self.patch_size ** 2, ("embed", "conv_in"), kernel_init=INIT, name="decoder_pred",
                    **kw)(img)
        out = unpatchify(out, self.patch_size, h, w)
        if self.final_conv:
            out = nn.Conv(c, (3, 3), padding="SAME", name="final_layer", **kw,
                          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                   (None, None, "conv_in", None)),
                          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(out)
        return out.astype(x.dtype)
