"""Features of the real reference images, computed once per dataset, resolution, image count
and extractor weights, and cached on disk beside the dataset."""
import os

import jax
import numpy as np
from jax.sharding import Mesh

from t2ijax.metrics.features import FeatureExtractor


class ReferenceFeatures:
    def __init__(self, images: np.ndarray, cache_dir: str, name: str):
        """`name` says what the images are (dataset, resolution, split); it starts the file names."""
        self.images, self.cache_dir, self.name = images, cache_dir, name
        self._in_memory: dict[str, np.ndarray] = {}

    def path(self, extractor: FeatureExtractor) -> str:
        return os.path.join(self.cache_dir, f"{self.name}-{len(self.images)}-{extractor.fingerprint}.npy")

    def features(self, extractor: FeatureExtractor, batch_size: int, mesh: Mesh | None = None) -> np.ndarray:
        """[N, D] float32 features of the reference images."""
        path = self.path(extractor)
        if path not in self._in_memory:
            if os.path.exists(path):
                self._in_memory[path] = np.load(path)
            else:
                self._in_memory[path] = extractor(self.images, batch_size, mesh)
                if jax.process_index() == 0:  # under config.data.data_dir, local by construction (config.py)
                    os.makedirs(self.cache_dir, exist_ok=True)
                    tmp = f"{path}.tmp-{os.getpid()}.npy"
                    np.save(tmp, self._in_memory[path])
                    os.replace(tmp, path)
        return self._in_memory[path]
