"""What an encoder returns: a diagonal Gaussian over latents, or a point (logvar None)."""
import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Posterior:
    mean: jax.Array                # [B, h, w, C]
    logvar: jax.Array | None       # same shape; None for deterministic encoders (pixel space, DC-AE)

    def mode(self) -> jax.Array:
        return self.mean

    def sample(self, rng: jax.Array) -> jax.Array:
        if self.logvar is None:
            return self.mean
        return self.mean + jnp.exp(0.5 * self.logvar) * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def kl(self) -> jax.Array:
        """KL(posterior || N(0, I)) summed over each example's latent: [B]."""
        return 0.5 * jnp.sum(self.mean**2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=(1, 2, 3))
