"""REPA's alignment term on known features, the three projectors and iREPA's target normalisation
against torch transcriptions of PRX's code, and the switch-off schedule.

The references are transcriptions written here from Photoroom/PRX's prx/algorithm/repa.py (MLP,
AttentionProjector, iREPALoss's Conv2d and spatial normalisation), not PRX's output: that module needs
composer and torchvision, neither installable here (see tests/test_perceptual.py on torchvision). PRX's
spatial normalisation differs from the iREPA authors' code (End2End-Diffusion/iREPA, spnorm.py:
(x - alpha * spatial mean) / spatial std with a scalar alpha, 0.6 by default in their LDM recipe);
t2ijax follows PRX (docs/techniques.md)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from t2ijax.techniques import repa


def _teacher(b=2, grid=(2, 3), d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(b, *grid, d)).astype(np.float32)


def test_alignment_is_the_mean_cosine_at_the_captured_tokens():
    teacher = _teacher()
    flat = teacher.reshape(2, 6, 5)
    tokens = np.array([[0, 2, 5], [1, 3, 4]])
    same = np.stack([flat[b, tokens[b]] for b in range(2)])
    np.testing.assert_allclose(repa.alignment(3.0 * same, tokens, teacher, normalize=False), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(repa.alignment(-same, tokens, teacher, normalize=False), [-1.0, -1.0], rtol=1e-6)
    projected = np.random.default_rng(1).normal(size=(2, 3, 5)).astype(np.float32)
    expected = [np.mean([np.dot(p, t) / np.linalg.norm(p) / np.linalg.norm(t) for p, t in zip(projected[b], same[b])])
                for b in range(2)]
    np.testing.assert_allclose(repa.alignment(projected, tokens, teacher, normalize=False), expected, rtol=1e-5)


def test_spatial_norm_matches_a_transcription_of_prx_irepa():
    """PRX's iREPALoss.forward: gamma is each token's mean over channels (not the iREPA authors' scalar)."""
    features = _teacher(grid=(3, 3), d=4).reshape(2, 9, 4)
    target_feature = torch.from_numpy(features)
    gamma = target_feature.mean(dim=2, keepdim=True)
    target_feature = target_feature - gamma * target_feature.mean(dim=1, keepdim=True)
    target_feature = target_feature / (target_feature.std(dim=1, keepdim=True) + 1e-6)
    np.testing.assert_allclose(repa.spatial_norm(jnp.asarray(features)), target_feature.numpy(), rtol=1e-5, atol=1e-6)


def test_weight_switches_off_at_stop_step():
    cfg = ml_collections.ConfigDict({"weight": 0.5, "stop_step": 100})
    assert float(repa.weight_at(cfg, jnp.asarray(99))) == 0.5 and float(repa.weight_at(cfg, jnp.asarray(100))) == 0.0
    cfg.stop_step = 0
    assert float(repa.weight_at(cfg, jnp.asarray(10**6))) == 0.5


GRID, WIDTH, FEATURES, HEADS = (2, 3), 16, 6, 2  # head width 8: two RoPE frequencies per axis


def _projected(kind: str, tokens: np.ndarray):
    """(the projector's params as numpy, its hidden-token input [2, K, WIDTH], its output [2, K, FEATURES])."""
    projector = repa.make_projector(kind, FEATURES, HEADS)
    h = np.random.default_rng(2).normal(size=(2, tokens.shape[1], WIDTH)).astype(np.float32)
    params = projector.init(jax.random.PRNGKey(0), h, tokens, GRID)["params"]
    params = jax.tree.map(lambda p: np.asarray(p) + np.random.default_rng(3).normal(size=p.shape).astype(np.float32)
                          * 0.1, nn.unbox(params))  # random biases too (they start at 0)
    out = projector.apply({"params": params}, h, tokens, GRID)
    return params, h, np.asarray(out)


def _linear(kernel, bias) -> torch.nn.Linear:
    layer = torch.nn.Linear(*kernel.shape)
    layer.weight.data, layer.bias.data = torch.from_numpy(kernel.T.copy()), torch.from_numpy(bias)
    return layer


def test_mlp_projector_matches_a_transcription_of_prx_repa_mlp():
    params, h, got = _projected("mlp", np.tile(np.arange(6), (2, 1)))
    in_layer, hidden_layer, out_layer = (_linear(params[n]["kernel"], params[n]["bias"])
                                         for n in ("layer_0", "layer_1", "out"))
    silu = torch.nn.SiLU()
    with torch.no_grad():
        expected = out_layer(silu(hidden_layer(silu(in_layer(torch.from_numpy(h))))))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_projector_matches_a_transcription_of_prx_irepa_conv():
    """Tokens are row-major over a non-square grid: a transposed layout would not match."""
    params, h, got = _projected("conv", np.tile(np.arange(6), (2, 1)))
    conv = torch.nn.Conv2d(WIDTH, FEATURES, kernel_size=3, padding=1)
    conv.weight.data = torch.from_numpy(params["conv"]["kernel"].transpose(3, 2, 0, 1).copy())
    conv.bias.data = torch.from_numpy(params["conv"]["bias"])
    activations = torch.from_numpy(h)
    b, t, d = activations.shape
    with torch.no_grad():
        projected = conv(activations.permute(0, 2, 1).reshape(b, d, *GRID))
    expected = projected.reshape(b, FEATURES, -1).permute(0, 2, 1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


class PrxAttentionProjector(torch.nn.Module):
    """PRX's AttentionProjector (prx/algorithm/repa.py), transcribed."""

    def __init__(self, embed_dim, out_dim, num_heads, theta=10000.0):
        super().__init__()
        self.num_heads, self.head_dim, self.theta = num_heads, embed_dim // num_heads, theta
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (torch.nn.Linear(embed_dim, embed_dim)
                                                                for _ in range(4))
        self.output = torch.nn.Linear(embed_dim, out_dim)

    @staticmethod
    def rope(pos, dim, theta):
        scale = torch.arange(0, dim, 2, dtype=torch.float64) / dim
        omega = 1.0 / (theta**scale)
        out = pos.unsqueeze(-1) * omega.unsqueeze(0)
        out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
        return out.view(*out.shape[:-1], 2, 2).float()

    @staticmethod
    def apply_rope(xq, freqs_cis):
        xq_ = xq.float().reshape(*xq.shape[:-1], -1, 1, 2)
        freqs_cis = freqs_cis.unsqueeze(1)
        xq_out = freqs_cis[..., 0] * xq_[..., 0] + freqs_cis[..., 1] * xq_[..., 1]
        return xq_out.reshape(*xq.shape).type_as(xq)

    def forward(self, x, h_coords, w_coords):
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        freqs_cis = torch.cat([self.rope(h_coords, self.head_dim // 2, self.theta),
                               self.rope(w_coords, self.head_dim // 2, self.theta)], dim=2)
        q, k = self.apply_rope(q, freqs_cis), self.apply_rope(k, freqs_cis)
        attn = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.output(self.out_proj(attn.transpose(1, 2).contiguous().view(b, n, d)))


def test_attention_projector_matches_a_transcription_of_prx_at_routed_tokens():
    """Each example keeps its own tokens (as inside a routed block range), at their grid positions."""
    tokens = np.array([[5, 0, 3, 4], [1, 2, 5, 3]])
    params, h, got = _projected("attention", tokens)
    reference = PrxAttentionProjector(WIDTH, FEATURES, HEADS)
    qkv = params["qkv"]
    for index, proj in enumerate((reference.q_proj, reference.k_proj, reference.v_proj)):
        proj.weight.data = torch.from_numpy(qkv["kernel"][:, index].reshape(WIDTH, WIDTH).T.copy())
        proj.bias.data = torch.from_numpy(qkv["bias"][index].reshape(WIDTH))
    reference.out_proj = _linear(params["attn_out"]["kernel"].reshape(WIDTH, WIDTH), params["attn_out"]["bias"])
    reference.output = _linear(params["out"]["kernel"], params["out"]["bias"])
    rows, cols = (torch.from_numpy(c).float() for c in np.divmod(tokens, GRID[1]))
    with torch.no_grad():
        expected = reference(torch.from_numpy(h), rows, cols)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
