"""The attention suite: one attention layer, forward and forward + backward, at the bench model's shapes
(config.bench's batch, image and text tokens; the model's heads and head size), for each implementation
this backend runs, against torch's fused scaled_dot_product_attention on the same inputs.

The keys are the text tokens (the last half of each caption padded) and the image tokens; the queries are
the image tokens, or text and image together where the backbone attends jointly (build.query_lengths)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2ijax.benchmarks.timing import seconds_per_call
from t2ijax.models.build import JOINT_SEQUENCE, attention_mismatch, num_image_tokens, query_lengths
from t2ijax.models.layers import masked_attention

IMPLEMENTATIONS = ("xla", "flash", "cudnn", "splash")


def attention_inputs(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """q [B, Lq, heads, D], k and v [B, Lk, heads, D], key_mask [B, Lk], and the cotangent of the output (float32,
    seeded by config.seed)."""
    b, m = config.bench, config.model
    image = num_image_tokens(m, b.latent_size, b.latent_size)
    queries = query_lengths(config, image)[0]
    keys = image + b.text_length + JOINT_SEQUENCE.get(m.name, 0)
    heads, dim = m.num_heads, m.hidden_size // m.num_heads
    rng = np.random.default_rng(config.seed)
    normal = lambda length: rng.standard_normal((b.batch_size, length, heads, dim), np.float32)
    key_mask = np.ones((b.batch_size, keys), bool)
    key_mask[:, b.text_length // 2:b.text_length] = False  # captions fill half their tokens
    return dict(q=normal(queries), k=normal(keys), v=normal(keys), key_mask=key_mask, grad=normal(queries))


def runnable(platform: str, queries: int, dtype: str) -> list[str]:
    """The implementations that run on `platform` at `queries` query tokens in `dtype`: splash tiles queries by
    128, cuDNN's fused kernel takes no float32."""
    return [impl for impl in IMPLEMENTATIONS if attention_mismatch(impl, platform) is None
            and not (impl == "splash" and queries % 128) and not (impl == "cudnn" and dtype != "bfloat16")]


def attention_suite(config: ml_collections.ConfigDict, repeats: int) -> dict:
    """Per implementation: forward and forward + backward milliseconds of one attention call."""
    inputs = attention_inputs(config)
    dtype = jnp.dtype(config.model.dtype)
    q, k, v, grad = (jnp.asarray(inputs[name], dtype) for name in ("q", "k", "v", "grad"))
    key_mask = jnp.asarray(inputs["key_mask"])
    result = {"queries": q.shape[1], "keys": k.shape[1], "heads": q.shape[2], "head_dim": q.shape[3],
              "batch_size": q.shape[0], "dtype": config.model.dtype}
    for impl in runnable(jax.default_backend(), q.shape[1], config.model.dtype):
        forward = jax.jit(lambda q, k, v, mask, impl=impl: masked_attention(q, k, v, mask, impl))

        @jax.jit
        def forward_backward(q, k, v, mask, impl=impl):
            _, vjp = jax.vjp(lambda q, k, v: masked_attention(q, k, v, mask, impl), q, k, v)
            return vjp(grad)

        result[impl] = {"forward_ms": 1e3 * seconds_per_call(lambda _: forward(q, k, v, key_mask), repeats),
                        "forward_backward_ms": 1e3 * seconds_per_call(
                            lambda _: forward_backward(q, k, v, key_mask), repeats)}
    return result
