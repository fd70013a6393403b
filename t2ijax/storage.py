"""Every path a run reads or writes, local or in a bucket, through one layer: etils.epath.

epath is what orbax already writes checkpoints with. For gs:// it runs on gcsfs (fsspec) rather than
TensorFlow's GCS file system: gcsfs honours STORAGE_EMULATOR_HOST, so the bucket code is tested against
a GCS emulator on this machine, while TensorFlow's file system always resolves the real service
(t2ijax/__init__.py makes the choice before etils or gcsfs can read it). TensorBoard's event files
come through here too (t2ijax/metrics/tensorboard_events.py); only jax's profiler writes through
TensorFlow, into a local directory uploaded afterwards (t2ijax/training/profiling.py).
"""
import os

import fsspec
from etils import epath

from t2ijax.errors import ConfigError

Path = epath.Path
SCHEMES = ("gs",)
# gcsfs keeps every directory listing for the life of the process, while tensorstore (orbax's array writer),
# orbax's cleanup and the other hosts add and remove objects it never hears of: list afresh each time.
fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


def is_url(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute (~ expanded), or a gs:// URL as it is; any other scheme is a one-line error."""
    text = os.fspath(path)
    if not is_url(text):
        return epath.Path(os.path.abspath(os.path.expanduser(text)))  # no scheme: a local path
    scheme = text.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise ConfigError(f"{text}: {scheme}:// is not supported; use a local path or gs://BUCKET/PATH")
    return epath.Path(text)


def files(directory: epath.Path) -> list[epath.Path]:
    """Every file under `directory`, at any depth (epath refuses glob("**") in a bucket, and its walk() there
    yields paths without their gs://, which then name local directories)."""
    return [f for path in directory.iterdir() for f in (files(path) if path.is_dir() else [path])]


def check_bucket(path: str | os.PathLike) -> None:
    """A gs:// path whose bucket does not exist (or cannot be reached) is a one-line error; local paths pass."""
    text = os.fspath(resolve(path))
    if not is_url(text):
        return
    bucket = "/".join(text.split("/")[:3])
    try:
        found = epath.Path(bucket).exists()
    except Exception as error:  # noqa: BLE001 - gcsfs raises auth, HTTP and connection errors alike
        raise ConfigError(f"{bucket} cannot be reached ({' '.join(str(error).split())[:200]}); check the "
                          "credentials (gcloud auth application-default login) and the bucket name") from None
    if not found:
        raise ConfigError(f"the bucket {bucket} does not exist; create it (gcloud storage buckets create {bucket}) "
                          f"or fix the path {text}")
