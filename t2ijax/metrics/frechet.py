"""Fréchet distance between Gaussians fitted to two feature sets, from streamed moments.

Each batch's mean and scatter (sum of outer products around the batch mean) are computed on
device in float32: under a mesh the batch stays sharded and XLA reduces across devices. The
host merges batches in float64 with the pairwise update of Chan, Golub and LeVeque, so a
long stream never subtracts two large float32 sums of squares. The distance is computed
once, on the host, in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError


@jax.jit
def _batch_moments(features: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(count, mean [D], scatter [D, D]) of the rows of `features` [B, D] where `valid` [B]."""
    x = features.astype(jnp.float32)
    weight = valid.astype(jnp.float32)[:, None]
    count = jnp.sum(weight)
    mean = jnp.sum(x * weight, axis=0) / jnp.maximum(count, 1.0)
    centred = (x - mean) * weight
    scatter = jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST)
    return count, mean, scatter


class Moments:
    """Count, mean and covariance of feature vectors fed a batch at a time."""

    def __init__(self):
        self.count = 0
        self.mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None

    def update(self, features: jax.Array | np.ndarray, valid: jax.Array | np.ndarray | None = None) -> None:
        """Adds the rows of `features` [B, D] (only those where `valid` [B] is true, if given).

        `features` may be a global array sharded over the mesh's batch axes.
        """
        if valid is None:
            valid = np.ones(features.shape[0], bool)
        count, mean, scatter = jax.device_get(_batch_moments(features, valid))
        count = int(round(float(count)))
        if count == 0:
            return
        mean, scatter = mean.astype(np.float64), scatter.astype(np.float64)
        if self.count == 0:
            self.count, self.mean, self._scatter = count, mean, scatter
            return
        total = self.count + count
        delta = mean - self.mean
        self._scatter = self._scatter + scatter + np.outer(delta, delta) * (self.count * count / total)
        self.mean = self.mean + delta * (count / total)
        self.count = total

    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance [D, D] in float64."""
        if self.count < 2:
            raise ConfigError(f"a covariance needs at least 2 samples, got {self.count}; "
                              "generate more images (eval.num_samples)")
        return self._scatter / (self.count - 1)

    def state(self) -> dict[str, np.ndarray]:
        return {"count": np.asarray(self.count), "mean": self.mean, "scatter": self._scatter}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "Moments":
        moments = cls()
        moments.count, moments.mean, moments._scatter = int(state["count"]), state["mean"], state["scatter"]
        return moments


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """|m1 - m2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^1/2), in float64.

    tr((C1 C2)^1/2) is the sum of the square roots of the eigenvalues of C1 C2, which are
    those of the symmetric PSD matrix C1^1/2 C2 C1^1/2: a symmetric eigensolver gives them
    without the complex round-off and the failures on singular covariances (fewer samples
    than dimensions) of a general matrix square root of C1 C2.
    """
    mean1, mean2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mean1, mean2, cov1, cov2))
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape:
        raise ConfigError(f"feature sets of different sizes: {mean1.shape} and {mean2.shape}")
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    diff = mean1 - mean2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def frechet_distance_of(moments1: Moments, moments2: Moments) -> float:
    return frechet_distance(moments1.mean, moments1.covariance(), moments2.mean, moments2.covariance())
