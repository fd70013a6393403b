"""diffusers PRXTransformer2DModel state dict (torch names, numpy arrays) -> PRX Flax params."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.models.prx import PRX


def _linear(sd, name, bias=True):
    """torch Linear [out, in] -> Flax Dense {kernel [in, out], bias}."""
    out = {"kernel": sd.pop(f"{name}.weight").T}
    if bias:
        out["bias"] = sd.pop(f"{name}.bias")
    return out


def _block(sd, prefix, num_heads, head_dim):
    heads = (num_heads, head_dim)
    lin = lambda name, bias=True: _linear(sd, prefix + name, bias)
    norm = lambda name: {"scale": sd.pop(f"{prefix}attention.{name}.weight")}

    def fused(name, n):  # [n*heads*head_dim, embed] -> [embed, n, heads, head_dim]
        return {"kernel": lin(name, bias=False)["kernel"].reshape(-1, n, *heads)}

    return {
        "modulation": lin("modulation.lin"),
        "attention": {
            "img_qkv": fused("attention.img_qkv_proj", 3),
            "txt_kv": fused("attention.txt_kv_proj", 2),
            "norm_q": norm("norm_q"),
            "norm_k": norm("norm_k"),
            "norm_added_k": norm("norm_added_k"),
            "to_out": {
                "kernel": lin("attention.to_out.0", bias=False)["kernel"].reshape(*heads, -1)},
        },
        "gate_proj": lin("gate_proj", bias=False),
        "up_proj": lin("up_proj", bias=False),
        "down_proj": lin("down_proj", bias=False),
    }


def prx_params_from_diffusers_state_dict(state_dict: dict[str, np.ndarray], model: PRX) -> dict:
    """Maps a diffusers PRX state dict onto `model`'s (unboxed) param tree.

    Per-layer weights are stacked on a leading axis when model.scan_layers. Raises if a
    key is left over, a parameter is missing, or a shape differs from the model's.
    """
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
    params = {
        "txt_in": _linear(sd, "txt_in"),
        "time_in": {"in_layer": _linear(sd, "time_in.in_layer"),
                    "out_layer": _linear(sd, "time_in.out_layer")},
        "final_layer": {"adaLN_modulation": _linear(sd, "final_layer.adaLN_modulation.1"),
                        "linear": _linear(sd, "final_layer.linear")},
    }
    if model.bottleneck_size is not None:
        params["img_in_bottleneck"] = _linear(sd, "img_in.0")
        params["img_in"] = _linear(sd, "img_in.1")
    else:
        params["img_in"] = _linear(sd, "img_in")
    if model.resolution_embeds:
        params["resolution_embedder"] = {
            "in_layer": _linear(sd, "resolution_embedder.mlp.in_layer"),
            "out_layer": _linear(sd, "resolution_embedder.mlp.out_layer")}

    blocks = [_block(sd, f"blocks.{i}.", model.num_heads, model.head_dim)
              for i in range(model.depth)]
    if model.scan_layers:
        params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
    else:
        params.update({f"blocks_{i}": block for i, block in enumerate(blocks)})
    if sd:
        raise ValueError(f"unused state dict keys: {sorted(sd)}")

    _check_against_model(params, model)
    return jax.tree.map(lambda a: jnp.asarray(a, model.param_dtype), params)


def _check_against_model(params, model: PRX):
    p, c = model.patch_size, model.in_channels
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, p, p, c)), jnp.zeros((1,)),
                            jnp.zeros((1, 1, model.context_in_dim)), jnp.ones((1, 1), bool))
    expected = jax.tree.map(lambda s: s.shape, nn.unbox(shapes["params"]))
    got = jax.tree.map(lambda a: a.shape, params)
    if expected != got:
        raise ValueError(f"converted param shapes differ from the model's:\n{got}\nvs\n{expected}")
