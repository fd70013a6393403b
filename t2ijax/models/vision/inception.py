"""Inception-v3 as FID uses it: pool3 features (2048-d) of the 2015 TensorFlow network.

The layout is torchvision's Inception3 with the two changes pytorch-fid makes to match the
TensorFlow graph its weights come from: the 3x3 average pools inside the mixed blocks leave
padding out of the average, and the last block pools its side branch with a max. Module
names mirror the torch modules (Mixed_5b/branch1x1/conv, .../bn), so a converted
pt_inception-2015-12-05 state dict maps onto the parameters by name (`inception_params`).
BatchNorm is frozen: (x - mean) / sqrt(var + 1e-3) * scale + bias.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.models.vision.weights import TorchTensors, check_shapes, read_weights

INPUT_SIZE = 299
SMALLEST_INPUT = 75  # the least the network takes; its parameter shapes do not depend on it
FEATURES = 2048
_BN_EPS = 1e-3
_BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


class FrozenBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stats = {name: self.param(name, init, (x.shape[-1],)) for name, init in (
            ("scale", nn.initializers.ones), ("bias", nn.initializers.zeros),
            ("mean", nn.initializers.zeros), ("var", nn.initializers.ones))}
        return (x - stats["mean"]) * (stats["scale"] * jax.lax.rsqrt(stats["var"] + _BN_EPS)) + stats["bias"]


class ConvBN(nn.Module):
    """torchvision's BasicConv2d: bias-free convolution, frozen BatchNorm, ReLU."""

    features: int
    kernel: int | tuple[int, int]
    strides: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
        pad = (self.padding, self.padding) if isinstance(self.padding, int) else self.padding
        x = nn.Conv(self.features, kernel, strides=self.strides, padding=[(pad[0], pad[0]), (pad[1], pad[1])],
                    use_bias=False, precision=jax.lax.Precision.HIGHEST,
                    kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"), name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _average_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_3x3(x: jax.Array, stride: int) -> jax.Array:
    padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        five = ConvBN(64, 5, padding=2, name="branch5x5_2")(ConvBN(48, 1, name="branch5x5_1")(x))
        double = ConvBN(64, 1, name="branch3x3dbl_1")(x)
        double = ConvBN(96, 3, padding=1, name="branch3x3dbl_3")(ConvBN(96, 3, padding=1, name="branch3x3dbl_2")(double))
        pool = ConvBN(self.pool_features, 1, name="branch_pool")(_average_3x3(x))
        return jnp.concatenate([ConvBN(64, 1, name="branch1x1")(x), five, double, pool], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        three = ConvBN(384, 3, strides=2, name="branch3x3")(x)
        double = ConvBN(64, 1, name="branch3x3dbl_1")(x)
        double = ConvBN(96, 3, strides=2, name="branch3x3dbl_3")(ConvBN(96, 3, padding=1, name="branch3x3dbl_2")(double))
        return jnp.concatenate([three, double, _max_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        row, column = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        seven = ConvBN(c, 1, name="branch7x7_1")(x)
        seven = ConvBN(192, **column, name="branch7x7_3")(ConvBN(c, **row, name="branch7x7_2")(seven))
        double = ConvBN(c, 1, name="branch7x7dbl_1")(x)
        for i, (features, shape) in enumerate([(c, column), (c, row), (c, column), (192, row)], start=2):
            double = ConvBN(features, **shape, name=f"branch7x7dbl_{i}")(double)
        pool = ConvBN(192, 1, name="branch_pool")(_average_3x3(x))
        return jnp.concatenate([ConvBN(192, 1, name="branch1x1")(x), seven, double, pool], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        three = ConvBN(320, 3, strides=2, name="branch3x3_2")(ConvBN(192, 1, name="branch3x3_1")(x))
        seven = ConvBN(192, 1, name="branch7x7x3_1")(x)
        seven = ConvBN(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(seven)
        seven = ConvBN(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(seven)
        seven = ConvBN(192, 3, strides=2, name="branch7x7x3_4")(seven)
        return jnp.concatenate([three, seven, _max_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
    max_pool: bool  # the FID network's last block pools its side branch with a max

    @nn.compact
    def __call__(self, x):
        def split(y, prefix):
            return [ConvBN(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(y),
                    ConvBN(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(y)]

        three = split(ConvBN(384, 1, name="branch3x3_1")(x), "branch3x3_2")
        double = ConvBN(384, 3, padding=1, name="branch3x3dbl_2")(ConvBN(448, 1, name="branch3x3dbl_1")(x))
        pooled = _max_3x3(x, 1) if self.max_pool else _average_3x3(x)
        pool = ConvBN(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([ConvBN(320, 1, name="branch1x1")(x), *three, *split(double, "branch3x3dbl_3"), pool],
                               axis=-1)


class InceptionV3(nn.Module):
    """Pixels [B, H, W, 3] scaled to [-1, 1] -> pool3 features [B, 2048]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ConvBN(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
        x = ConvBN(32, 3, name="Conv2d_2a_3x3")(x)
        x = _max_3x3(ConvBN(64, 3, padding=1, name="Conv2d_2b_3x3")(x), 2)
        x = ConvBN(80, 1, name="Conv2d_3b_1x1")(x)
        x = _max_3x3(ConvBN(192, 3, name="Conv2d_4a_3x3")(x), 2)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def _torch_name(path: tuple[str, ...]) -> str:
    """('Mixed_5b', 'branch1x1', 'bn', 'mean') -> 'Mixed_5b.branch1x1.bn.running_mean'."""
    *modules, leaf = path
    return ".".join(modules) + "." + ("weight" if leaf == "kernel" else _BN_NAMES[leaf])


def inception_params(tensors: TorchTensors) -> dict:
    """Every parameter from the torchvision-named tensor of the same module (extra ones, such as
    the classifier `fc`, are ignored)."""
    example = jnp.zeros((1, SMALLEST_INPUT, SMALLEST_INPUT, 3))
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0), example)["params"]

    def read(path, _):
        keys = tuple(p.key for p in path)
        value = tensors.take(_torch_name(keys))
        return value.transpose(2, 3, 1, 0) if keys[-1] == "kernel" else value

    params = jax.tree_util.tree_map_with_path(read, shapes)
    check_shapes(params, InceptionV3(), example)
    return params


def load_inception(path) -> tuple[InceptionV3, dict]:
    """The network and its float32 parameters from a torchvision-named .safetensors file."""
    _, tensors = read_weights(path, "Inception")
    return InceptionV3(), inception_params(TorchTensors(tensors, "Inception"))


def random_inception(seed: int = 0) -> tuple[InceptionV3, dict]:
    """The same network with fixed random (He-normal) weights: a feature space that exists offline."""
    example = jnp.zeros((1, SMALLEST_INPUT, SMALLEST_INPUT, 3))
    params = jax.jit(InceptionV3().init)(jax.random.key(seed), example)["params"]
    return InceptionV3(), jax.tree.map(np.asarray, params)
