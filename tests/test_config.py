"""Bad input fails before compute with a one-line error naming what to change."""
import os
import shutil
import subprocess
import sys

import pytest

from configs import base, prx_small, shapes_tiny
from conftest import env_with_devices, error_line
from t2ijax.config import check_overrides, validate
from t2ijax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module", [shapes_tiny, prx_small])
def test_shipped_configs_validate(module):
    validate(module.get_config(), num_devices=8)


def test_unknown_key_names_it_and_suggests():
    c = shapes_tiny.get_config()
    c.model.hiden_size = 64
    with pytest.raises(ConfigError, match=r"config.model.hiden_size is not a config field; did you mean "
                                          r"config.model.hidden_size\?"):
        validate(c, num_devices=1)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="config.optim.lr is not a config field"):
        check_overrides(["prog", "--config.optim.lr=3e-4"])
    check_overrides(["prog", "--config.optim.learning_rate=3e-4", "--workdir=x"])


def test_axis_value_lists_the_allowed_names():
    c = shapes_tiny.get_config()
    c.diffusion.path = "ddpm"
    with pytest.raises(ConfigError, match="config.diffusion.path='ddpm' is not one of: rectified_flow"):
        validate(c, num_devices=1)


def test_missing_values_are_rejected():
    c = base.get_config()
    c.model.depth = None  # ConfigDict's own type checks let None through
    with pytest.raises(ConfigError, match="config.model.depth=None must be a number"):
        validate(c, num_devices=1)
    c = base.get_config()
    c.model.scan_layers = None
    with pytest.raises(ConfigError, match="config.model.scan_layers=None must be a bool"):
        validate(c, num_devices=1)


def test_mesh_must_match_device_count():
    c = shapes_tiny.get_config()
    c.mesh.update(data=2, fsdp=2, tensor=1)
    with pytest.raises(ConfigError, match=r"uses 4 devices but 8 are present"):
        validate(c, num_devices=8)
    c.mesh.update(data=-1, fsdp=3, tensor=1)
    with pytest.raises(ConfigError, match="cannot fill 8 devices"):
        validate(c, num_devices=8)


def test_batch_must_divide_over_data_parallel_devices():
    c = shapes_tiny.get_config()
    c.data.global_batch_size = 12
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    with pytest.raises(ConfigError, match="global_batch_size=12 is not divisible by the data-parallel size 8"):
        validate(c, num_devices=8)
    c.mesh.update(data=1, fsdp=4, tensor=2)
    validate(c, num_devices=8)


def test_per_host_batch_must_be_whole():
    c = shapes_tiny.get_config()
    c.data.global_batch_size = 10
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    with pytest.raises(ConfigError, match=r"global_batch_size=10 is not divisible by the data-parallel size 4 "
                                          r"\(data x fsdp\) \(nor into a whole per-host batch over 4 processes\); "
                                          r"use a multiple of 4"):
        validate(c, num_devices=4, num_processes=4)
    c.data.global_batch_size = 8
    c.mesh.update(data=1, fsdp=2, tensor=4)
    with pytest.raises(ConfigError, match="split 2 ways .* over 4 processes.*make data x fsdp a multiple of 4"):
        validate(c, num_devices=8, num_processes=4)
    c.mesh.update(data=1, fsdp=4, tensor=2)
    validate(c, num_devices=8, num_processes=4)


@pytest.mark.parametrize("model, mesh, message", [
    (dict(num_heads=4), dict(tensor=8),
     r"config.model.num_heads=4 cannot be split 8 ways over mesh axes tensor \(config.sharding_rules.heads\); "
     r"use sizes whose product divides 4: 1, 2, 4$"),
    (dict(hidden_size=96, num_heads=2), dict(fsdp=-1),
     "config.model.hidden_size=96 cannot be split 64 ways over mesh axes fsdp .* divides 96: 1, 2, 3, 4, 6, 8, 12, "
     "16, 24, 32, 48, 96$"),
    (dict(hidden_size=32, num_heads=4, mlp_ratio=1.3125), dict(tensor=4), "the MLP width .*=42 cannot be split 4 ways"),
])
def test_model_dimensions_must_split_over_their_mesh_axes(model, mesh, message):
    c = shapes_tiny.get_config()
    c.data.global_batch_size = 64
    c.model.update(model)
    c.mesh.update(dict(dict(data=1, fsdp=1, tensor=1), **mesh))
    with pytest.raises(ConfigError, match=message):
        validate(c, num_devices=64 if -1 in mesh.values() else max(mesh.values()))


def test_cudnn_attention_needs_a_gpu():
    c = shapes_tiny.get_config()
    c.model.attention_impl = "cudnn"
    validate(c, num_devices=1)  # no backend given: nothing to check it against
    validate(c, num_devices=1, platform="gpu")
    with pytest.raises(ConfigError, match="attention_impl='cudnn' runs only on NVIDIA GPUs and this backend is cpu; "
                                          "use xla"):
        validate(c, num_devices=1, platform="cpu")


@pytest.mark.parametrize("section,field,value,message", [
    ("model", "num_heads", 3, "hidden_size=128 is not divisible by config.model.num_heads=3"),
    ("model", "patch_size", 5, "resolution=32 is not divisible by config.model.patch_size=5"),
    ("nonfinite", "policy", "ignore", "config.nonfinite.policy='ignore' is not one of: halt, skip"),
    ("checkpoint", "keep", 0, "config.checkpoint.keep must be positive"),
    ("model", "param_dtype", "float16", "config.model.param_dtype='float16' is not one of: bfloat16, float32"),
    ("optim", "name", "lion", "config.optim.name='lion' is not one of: adamw, muon"),
    ("optim", "muon_learning_rate", 0.0, "config.optim.muon_learning_rate=0.0 must be positive"),
    ("optim", "muon_ns_steps", 0, "config.optim.muon_ns_steps=0 must be positive"),
    ("optim", "muon_update_rms", -0.2, "config.optim.muon_update_rms=-0.2 must be positive"),
    ("optim", "muon_momentum", 1.0, r"config.optim.muon_momentum=1.0 must be in \[0, 1\)"),
])
def test_one_bad_field_is_named(section, field, value, message):
    c = shapes_tiny.get_config()
    c[section][field] = value
    with pytest.raises(ConfigError, match=message):
        validate(c, num_devices=1)


@pytest.mark.parametrize("overrides,message", [
    (dict(diffusion=dict(prediction="epsilon")), "config.diffusion.prediction='epsilon' cannot give x0 at t = 1 on "
                                                 "config.diffusion.path='rectified_flow', which keeps no signal there; "
                                                 "use one of: v, velocity, x0"),
    (dict(diffusion=dict(path="vp_cosine", prediction="epsilon")), "path='vp_cosine', which keeps no signal"),
    (dict(sampler=dict(name="ddim")), "config.sampler.name='ddim' needs a variance-preserving config.diffusion.path, "
                                      "not 'rectified_flow'"),
    (dict(sampler=dict(name="dpm")), "config.sampler.name='dpm' is not one of: ddim, dpmpp_2m, euler, flow_match_euler, heun"),
    (dict(sampler=dict(guidance_interval=(0.8, 0.2))), r"config.sampler.guidance_interval=\(0.8, 0.2\) must be"),
    (dict(sampler=dict(guidance_interval=(0.5,))), "guidance_interval=.* must be .low, high."),
    (dict(sampler=dict(steps=0)), "config.sampler.steps=0 must be positive"),
    (dict(diffusion=dict(loss_space="score")), "config.diffusion.loss_space='score' is not one of: prediction, epsilon"),
    (dict(diffusion=dict(beta_schedule="cosine")), "config.diffusion.beta_schedule='cosine' is not one of: linear"),
    (dict(diffusion=dict(shift_mode="auto")), "config.diffusion.shift_mode='auto' is not one of: fixed, resolution"),
    (dict(diffusion=dict(shift=0.0)), "config.diffusion.shift=0.0 must be positive"),
    (dict(diffusion=dict(discrete_steps=0)), "config.diffusion.discrete_steps=0 must be positive"),
    (dict(diffusion=dict(uniform_fraction=1.5)), "uniform_fraction=1.5 must be in"),
    (dict(diffusion=dict(t_min=1.0)), r"config.diffusion.t_min=1.0 must be in \[0, 1\)"),
    (dict(diffusion=dict(mode_scale=2.0)), "config.diffusion.mode_scale=2.0 must be in"),
    (dict(diffusion=dict(base_tokens=4096)), "base_tokens and max_tokens are both 4096"),
])
def test_invalid_formulations_fail_at_validation(overrides, message):
    c = shapes_tiny.get_config()
    for section, values in overrides.items():
        c[section].update(values)
    with pytest.raises(ConfigError, match=message) as error:
        validate(c, num_devices=1)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", [
    dict(diffusion=dict(path="vp_linear", prediction="epsilon"), sampler=dict(name="ddim")),
    dict(diffusion=dict(path="vp_cosine", prediction="v", loss_space="velocity", loss_weighting="min_snr"),
         sampler=dict(name="dpmpp_2m", guidance_interval=(0.1, 0.9), negative_prompt="blurry")),
    dict(diffusion=dict(prediction="x0", loss_space="velocity", timesteps="mode", shift_mode="resolution")),
])
def test_valid_formulations_pass(overrides):
    c = shapes_tiny.get_config()
    for section, values in overrides.items():
        c[section].update(values)
    validate(c, num_devices=1)


def _run_main(*args, env=None):
    return subprocess.run([sys.executable, "-m", "t2ijax.main", "--config=configs/shapes_tiny.py", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_cli_errors_are_one_line(tmp_path):
    assert "did you mean config.model.depth" in error_line(
        _run_main(f"--workdir={tmp_path}", "--config.model.deptj=3"))
    assert "is not one of" in error_line(_run_main(f"--workdir={tmp_path}", "--config.diffusion.timesteps=x"))
    assert "needs a variance-preserving" in error_line(_run_main(f"--workdir={tmp_path}", "--config.sampler.name=ddim"))
    assert "unknown variant 'nope'; the variants are: rectified_flow" in error_line(
        _run_main(f"--workdir={tmp_path}", "--config=configs/ablations/path.py:nope"))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    line = error_line(_run_main(f"--workdir={blocked}/run"))
    assert f"{blocked}/run cannot be written" in line  # the workdir, locked before anything is written in it
    env = env_with_devices(4)
    line = error_line(_run_main(f"--workdir={tmp_path}/run", "--config.data.global_batch_size=6", env=env))
    assert "global_batch_size=6 is not divisible by the data-parallel size 4" in line
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_text_encoder_controls_are_checked():
    c = shapes_tiny.get_config()
    c.text_encoder.init = "scratch"
    with pytest.raises(ConfigError, match="config.text_encoder.init='scratch' is not one of: pretrained, random"):
        validate(c, num_devices=1)
    c.text_encoder.update(init="random", name="none")
    with pytest.raises(ConfigError, match="config.text_encoder.init='random' has no meaning with "
                                          "config.text_encoder.name='none'"):
        validate(c, num_devices=1)
    c.text_encoder.update(init="pretrained", dtype="float16")
    with pytest.raises(ConfigError, match="config.text_encoder.dtype='float16' is not one of: bfloat16, float32"):
        validate(c, num_devices=1)
    c.text_encoder.update(dtype="float32", clean="aggressive")
    with pytest.raises(ConfigError, match="config.text_encoder.clean='aggressive' is not one of: basic, deepfloyd, "
                                          "none"):
        validate(c, num_devices=1)


def test_text_encoder_path_must_hold_config_tokenizer_and_weights(tmp_path):
    from t2ijax.models.text.loading import resolve_model_dir

    c = shapes_tiny.get_config()
    c.text_encoder.path = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match="config.text_encoder.path='.*absent' is not a directory"):
        validate(c, num_devices=1)
    c.text_encoder.path = str(tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path} has no config.json"):
        validate(c, num_devices=1)
    minilm = resolve_model_dir("all-MiniLM-L6-v2")
    shutil.copy(minilm / "config.json", tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path} has no tokenizer files .*tokenizer.json"):
        validate(c, num_devices=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(minilm / name, tmp_path)
    with pytest.raises(ConfigError, match=rf"{tmp_path} has no \*.safetensors weights"):
        validate(c, num_devices=1)
    c.text_encoder.init = "random"  # the architecture alone needs no weights
    validate(c, num_devices=1)
    c.text_encoder.update(name="none", init="pretrained")
    with pytest.raises(ConfigError, match="path='.*' is set but config.text_encoder.name='none'"):
        validate(c, num_devices=1)


def test_text_encoder_layer_and_max_length_are_checked_against_the_model():
    c = shapes_tiny.get_config()  # MiniLM: 6 layers, 512 positions
    c.text_encoder.layer = 7
    with pytest.raises(ConfigError, match="text_encoder.layer=7 is out of range for a 6-layer encoder"):
        validate(c, num_devices=1)
    c.text_encoder.update(layer=-1, max_length=600)
    with pytest.raises(ConfigError, match="text_encoder.max_length=600 exceeds the 512 positions"):
        validate(c, num_devices=1)
