"""config.profile writes a jax.profiler trace of the steps it names, TensorBoard's profile plugin's
files; each step is annotated and runs under a transfer guard."""
import glob
import os

import pytest

from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.training import profiling
from t2ijax.training.loop import Run


def _xspace(path: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the format TensorBoard's profile plugin reads

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    return space


def _annotated_steps(space) -> set[int]:
    """The step numbers of the "train" StepTraceAnnotations on the trace's host threads."""
    steps = set()
    for plane in space.planes:
        names = {k: m.name for k, m in plane.event_metadata.items()}
        stat_names = {k: m.name for k, m in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                if names.get(event.metadata_id) == "train":
                    steps.update(s.int64_value or s.uint64_value for s in event.stats
                                 if stat_names.get(s.metadata_id) == "step_num")
    return steps


def test_profile_window_writes_a_tensorboard_trace_of_its_steps(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.profile.update(start_step=2, steps=2)
    workdir = str(tmp_path / "run")
    Run(config, workdir).setup().train()
    traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    assert _annotated_steps(_xspace(traces[0])) == {2, 3}


def test_no_trace_on_other_hosts_or_by_default(tmp_path):
    config = tiny_config(str(tmp_path))
    for profile, process_index in ((dict(start_step=0, hosts=(0,)), 1), (dict(start_step=-1, hosts=()), 0)):
        config.profile.update(profile)
        with profiling.ProfileWindow(config.profile, str(tmp_path), process_index) as window:
            for step in range(4):
                window.before_step(step)
                window.after_step(step + 1, None)
            assert not window.tracing
    assert not os.path.exists(profiling.profile_dir(str(tmp_path)))


def test_an_implicit_host_transfer_in_the_step_fails_loudly(data_dir, tmp_path, monkeypatch):
    run = Run(tiny_config(data_dir), str(tmp_path / "run")).setup()
    host_batch = lambda step: run._model_batch(run.batches[0](step))  # NumPy arrays
    monkeypatch.setattr(run, "device_batch", host_batch)
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        run.train()
    run.close()


@pytest.mark.parametrize("overrides, message", [
    ({"profile.start_step": 6}, "profile.start_step=6 is never reached: the run ends at total_steps=6"),
    ({"profile.start_step": -2}, "profile.start_step=-2 and steps=3 must be >= -1"),
    ({"profile.steps": 0}, "profile.start_step=-1 and steps=0 must be >= -1"),
    ({"profile.hosts": (0, 1)}, r"profile.hosts=\(0, 1\) must be process indices in 0..0"),
    ({"compile.threads": -1}, "compile.threads=-1 must be >= 0"),
])
def test_bad_profile_and_compile_settings_fail_validation(overrides, message):
    config = tiny_config("data")
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, num_devices=1)
