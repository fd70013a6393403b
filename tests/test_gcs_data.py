"""Dataset builds, caches, user datasets and weights directories are local files: a gs:// URL in a field that
names them, or as the autoencoder trainer's workdir, is one line saying to mount the bucket with gcsfuse, before
any data is listed or anything compiled, and nothing is written under a directory named after the URL."""
import os
import subprocess
import sys

import pytest

from conftest import error_line, tiny_config
from t2ijax.config import check_local_files, validate, validate_eval
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.training import train_autoencoder
from t2ijax.defaults import LOCAL_PATHS, NAMES_OR_PATHS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOUNT = "mount the bucket with gcsfuse (launch/tpu_vm.sh mount --bucket=t2ijax-data mounts it at /mnt/t2ijax-data)"


def _set(config, field: str, value: str) -> None:
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value


@pytest.mark.parametrize("field", [*LOCAL_PATHS, *NAMES_OR_PATHS])
def test_a_bucket_url_in_a_local_file_field_says_to_mount_it(field, tmp_path):
    config = tiny_config(str(tmp_path / "data"))
    _set(config, field, "gs://t2ijax-data/some/dir")
    with pytest.raises(ConfigError) as raised:
        validate(config, num_devices=1)
    message = str(raised.value)
    assert message.startswith(f"config.{field}=gs://t2ijax-data/some/dir: ") and "\n" not in message
    assert message.endswith(f"; {MOUNT} and pass --config.{field}=/mnt/t2ijax-data/some/dir")
    with pytest.raises(ConfigError, match="mount the bucket"):
        validate_eval(config)  # t2ijax.evaluate reads the same files
    _set(config, field, "/mnt/t2ijax-data/some/dir")  # what the message says to pass
    check_local_files(config)


def test_the_data_dir_message_names_the_caches_and_other_schemes_are_refused(tmp_path):
    config = tiny_config("gs://t2ijax-data")
    with pytest.raises(ConfigError) as raised:
        check_local_files(config)
    assert str(raised.value) == (f"config.data.data_dir=gs://t2ijax-data: dataset builds and caches are local "
                                 f"files; {MOUNT} and pass --config.data.data_dir=/mnt/t2ijax-data")
    config.data.data_dir = str(tmp_path)
    config.text_encoder.path = "s3://weights/minilm"
    with pytest.raises(ConfigError) as raised:
        check_local_files(config)
    assert str(raised.value) == ("config.text_encoder.path=s3://weights/minilm: weights are read from local files; "
                                 "pass a local path")


def _command(tmp_path, module: str, *args: str) -> str:
    """The one error line of `python -m module args` run in `tmp_path`, which must stay empty."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=180)
    assert os.listdir(tmp_path) == []  # no ./gs:/... directory, no workdir, no data
    return error_line(done)


def test_training_refuses_a_bucket_data_dir_before_anything_is_written(tmp_path):
    line = _command(tmp_path, "t2ijax.main", f"--config={REPO}/configs/shapes_tiny.py",
                    f"--workdir={tmp_path}/run", "--config.data.data_dir=gs://t2ijax-data/shapes")
    assert line == (f"error: config.data.data_dir=gs://t2ijax-data/shapes: dataset builds and caches are local "
                    f"files; {MOUNT} and pass --config.data.data_dir=/mnt/t2ijax-data/shapes")


def test_the_autoencoder_trainer_refuses_a_bucket_workdir(tmp_path):
    line = _command(tmp_path, "t2ijax.train_autoencoder", f"--config={REPO}/configs/shapes_autoencoder.py",
                    "--workdir=gs://t2ijax-data/autoencoders/shapes")
    assert line == ("error: --workdir=gs://t2ijax-data/autoencoders/shapes: the autoencoder is a local diffusers "
                    f"directory (read through config.autoencoder.name); {MOUNT} and pass "
                    "--workdir=/mnt/t2ijax-data/autoencoders/shapes")
    with pytest.raises(ConfigError, match="mount the bucket"):  # the function itself, called from Python
        train_autoencoder(tiny_config(str(tmp_path / "data")), "gs://t2ijax-data/ae")


@pytest.mark.parametrize("command, workdir", [("t2ijax.preprocess", []), ("t2ijax.main", ["--workdir=run"])])
def test_a_bucket_init_from_is_named_before_it_is_looked_up(command, workdir, tmp_path):
    line = _command(tmp_path, command, f"--config={REPO}/configs/prx_finetune.py", *workdir,
                    "--config.init_from=gs://t2ijax-data/prx")
    assert line == ("error: config.init_from=gs://t2ijax-data/prx: weights are read from local files; "
                    f"{MOUNT} and pass --config.init_from=/mnt/t2ijax-data/prx")
