"""What the network predicts, and how its output becomes a velocity for the samplers."""
import dataclasses
from typing import Callable

import jax

from t2ijax.diffusion.paths import Path
from t2ijax.registry import Registry

PREDICTIONS = Registry("diffusion.prediction")


@dataclasses.dataclass(frozen=True)
class Prediction:
    # (path, x0, eps, t) -> the training target in the prediction's own space
    target: Callable[[Path, jax.Array, jax.Array, jax.Array], jax.Array]
    # (path, output, x_t, t) -> velocity d x_t / d t
    to_velocity: Callable[[Path, jax.Array, jax.Array, jax.Array], jax.Array]


PREDICTIONS.register("velocity")(
    Prediction(
        target=lambda path, x0, eps, t: path.velocity(x0, eps, t),
        to_velocity=lambda path, out, x_t, t: out,
    )
)
