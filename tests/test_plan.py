"""python -m t2ijax.plan: the per-device state it derives from the shardings is what the compiled
step takes as arguments, its FLOPs agree with the layer count, remat trades memory for FLOPs, and
bad meshes fail in one line before compiling."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--config=configs/shapes_tiny.py", "--config.model.hidden_size=64", "--config.model.depth=2",
         "--config.data.global_batch_size=16"]


def _plan(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "t2ijax.plan", *SMALL, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    out = {}
    for remat in ("none", "full"):
        done = _plan("--devices=8", "--mesh=fsdp:4,tensor:2", f"--remat={remat}", f"--json={tmp}/{remat}.json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "per device:" in done.stdout and "fits: v5e" in done.stdout
        out[remat] = json.loads((tmp / f"{remat}.json").read_text())
    return out


def test_state_and_batch_per_device_are_the_compiled_arguments(plans):
    p = plans["none"]
    assert p["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2} and p["ema_bytes"] == 0
    # Adam: two moments per parameter, plus its step count.
    assert p["optimizer_bytes"] == pytest.approx(2 * p["params_bytes"], abs=64)
    state = p["params_bytes"] + p["optimizer_bytes"] + p["ema_bytes"] + 4 + 8  # + step and rng
    assert p["argument_bytes"] == state + p["batch_bytes"]
    # Split 8 ways, the parameters take between 1/8 and 1/2 of their fp32 bytes on each device (small ones replicate).
    assert 4 * p["parameters"] / 8 <= p["params_bytes"] < 4 * p["parameters"] / 2
    assert p["alias_bytes"] == state and p["temp_bytes"] > 0


def test_flops_agree_with_the_layer_count_and_remat_trades_memory_for_them(plans):
    none, full = plans["none"], plans["full"]
    assert none["flops_per_image"] == pytest.approx(none["model_flops_per_image"], rel=0.1)
    assert none["model_flops_per_image"] == full["model_flops_per_image"]
    assert full["flops_per_image"] > 1.2 * none["flops_per_image"]  # the forward pass again
    assert full["temp_bytes"] < none["temp_bytes"]


# The other checks (head count, hidden size, batch) are validate's, tested in tests/test_config.py.
@pytest.mark.parametrize("args, message", [
    (["--devices=8", "--mesh=fsdp:3"], r"config.mesh \(data=1, fsdp=3, tensor=1\) uses 3 devices but 8 are present"),
    (["--devices=8", "--mesh=tensor:8"], "config.model.num_heads=4 cannot be split 8 ways over mesh axes tensor"),
    (["--devices=8", "--mesh=fsdp=8"], "each part is AXIS:SIZE"),
    (["--devices=8", "--mesh=fsdp:2,tensor:4", "--hosts=4", "--config.model.num_heads=8",
      "--config.model.hidden_size=64"], "split 2 ways .* over 4 processes"),
])
def test_bad_meshes_are_one_line_errors(args, message):
    done = _plan(*args)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), done.stderr[-2000:]
