"""configs/arch_part1.py: each backbone at PRX Part 1's scale validates for a 64-device plan and builds, the
autoencoder's and text encoder's shapes read from the config.json-only directories in configs/architectures/
(no compile; the plans themselves are in docs/scaling.md), and a small plan of a two-stack backbone matches its
collectives to its parameters."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import arch_part1
from t2ijax.benchmarks import collectives
from t2ijax.benchmarks.planning import text_width
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import geometry
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.training.state import example_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _descriptor(name: str) -> dict:
    return json.loads((arch_part1.ARCHITECTURES / name / "config.json").read_text())


@pytest.mark.parametrize("backbone", arch_part1.BACKBONES)
def test_each_backbone_validates_and_builds_from_the_descriptors(backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the descriptor paths do not depend on the working directory
    config = arch_part1.get_config(backbone)
    validate(config, 64, platform="cpu", shapes_only=True)
    vae, encoder = _descriptor("flux_vae"), _descriptor("t5gemma_2b_encoder")
    channels, downsample = geometry(config.autoencoder.name)
    assert (channels, downsample) == (vae["latent_channels"], 2 ** (len(vae["block_out_channels"]) - 1)) == (16, 8)
    assert text_width(config.text_encoder) == encoder["hidden_size"] == 2304
    side = config.data.resolution // downsample
    assert num_image_tokens(config.model, side, side) == 256

    model = build_model(config, channels, text_width(config.text_encoder))
    assert (model.hidden_size, model.num_heads, model.depth) == (1792, 28, 16)
    params = jax.eval_shape(model.init, jax.random.key(0), **example_inputs(1, side, channels, 256, 2304))
    sizes = [x.size for x in jax.tree.leaves(params)]
    assert 5e8 < sum(sizes) < 4e9  # PRX Part 1 reports 689M to 3.1B for its five
    assert model.dtype == jnp.bfloat16 and config.model.remat_policy == "dots"


def test_a_run_still_needs_the_tokenizer_and_weights_the_descriptors_lack():
    with pytest.raises(ConfigError, match="t5gemma_2b_encoder has no tokenizer files"):
        validate(arch_part1.get_config("mmdit"), 64, platform="cpu")


def test_an_unknown_backbone_lists_the_backbones():
    with pytest.raises(ConfigError, match="unknown backbone; the backbones are prx, dit_cross, mmdit, flux, uvit"):
        arch_part1.get_config("dit")


def test_the_plan_matches_a_two_stack_backbones_collectives_to_its_parameters(tmp_path):
    """Flux's scanned stacks (double_blocks, single_blocks) are found by their "layers" axis: every collective
    is its parameters' FSDP traffic or a named difference, none unexplained."""
    out = tmp_path / "flux.json"
    done = subprocess.run([sys.executable, "-m", "t2ijax.plan", "--config=configs/arch_part1.py:flux", "--devices=8",
                           "--mesh=fsdp:8", "--config.model.hidden_size=128", "--config.model.num_heads=2",
                           "--config.model.depth=4", "--config.data.global_batch_size=16",
                           "--config.text_encoder.max_length=8", f"--json={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["collective_flags"] == [] and collectives.UNEXPLAINED not in plan["collectives_explained"]
    gathered = {r["moves"] for r in plan["collective_moves"] if r["kind"] == "all-gather"}
    assert {"forward DoubleStreamBlock_0/img_mlp/fc1/dot_general",
            "forward SingleStreamBlock_0/proj_mlp/dot_general"} <= gathered
