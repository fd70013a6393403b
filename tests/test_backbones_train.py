"""Every backbone trains in the tiny config with every technique and formulation validation allows it, and on
an 8-device CPU mesh (fsdp 4 x tensor 2) gives the same losses and params as on 1 device, with the CPU's
attention (flash: key tiles and a recomputing backward pass)."""
import os

import numpy as np
import pytest

from conftest import printed_json, tiny_config
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from test_techniques_train import apply

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = ("dit_cross", "mmdit", "flux", "uvit")
STEPS = 2
# Key biases (PixArt's, U-ViT's qkv) get no gradient (softmax ignores a shift shared by every key): their gradient
# is rounding noise, which Adam with PRX's eps of 1e-15 turns into full-size steps that differ across meshes
# (1e-8 still leaves 3e-4 of a bias's sum).
EPS = {"optim.eps": 1e-6}


def variants(backbone: str, teacher: str) -> dict[str, dict]:
    """Two configs that between them hold every technique and both VP formulation paths (rectified flow is
    every other run's) with x0 and v prediction: techniques and formulation act on the backbone's input and
    output, so one run can check several."""
    dino = {"teacher.name": "dinov2", "teacher.path": teacher}
    routed = backbone != "uvit"  # U-ViT's long skips take no routing (validation refuses it)
    tread = {"routing.method": "tread", "routing.start": 0, "routing.end": 0} if routed else {}
    sprint = {"routing.method": "sprint", "routing.start": 1, "routing.end": 1} if routed else {}
    return {
        "combination": {"model.name": backbone, "repa.weight": 0.5, "repa.layer": 0, "repa.projector": "attention",
                        **dino, **tread, "contrastive.weight": 0.1, "ema.decay": 0.9, "optim.name": "muon",
                        "diffusion.path": "vp_linear", "diffusion.prediction": "x0", **EPS},
        "formulation": {"model.name": backbone, **sprint, "repa.weight": 0.5, "repa.layer": 0, "repa.projector": "conv",
                        "repa.spatial_norm": True, "perceptual.dino_weight": 0.1, **dino, "optim.microbatches": 2,
                        "diffusion.path": "vp_cosine", "diffusion.prediction": "v",
                        "diffusion.loss_weighting": "min_snr", "model.param_dtype": "bfloat16", **EPS},
    }


RUN = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
import numpy as np
from conftest import tiny_config
from test_backbones_train import BACKBONES, STEPS, apply, variants
from t2ijax.training.loop import Run

out = {{}}
for backbone in BACKBONES:
    for name, fields in variants(backbone, {teacher!r}).items():
        if jax.device_count() > 1 and name != "combination":
            continue
        config = apply(tiny_config({data_dir!r}), fields)
        if jax.device_count() > 1:
            config.mesh.update(data=1, fsdp=4, tensor=2)
        run = Run(config, {workdir!r} + f"/{{backbone}}_{{name}}").setup()
        state, losses = run.state, []
        for step in range(STEPS):
            state, metrics = run.train_step(state, run.device_batch(step))
            losses.append({{k: float(v) for k, v in metrics.items() if k.startswith("loss")}})
        params = jax.tree.leaves(jax.device_get(state.params))
        out[f"{{backbone}} {{name}}"] = dict(losses=losses, params=[float(np.sum(np.abs(p.astype(np.float64))))
                                                                   for p in params], count=len(params),
                                             attention=run.model.attention_impl)
print("RESULT " + json.dumps({{"devices": jax.device_count(), "runs": out}}))
"""


def _train(devices: int, data_dir: str, teacher: str, workdir) -> dict:
    script = RUN.format(tests=os.path.join(REPO, "tests"), data_dir=data_dir, teacher=teacher, workdir=str(workdir))
    result = printed_json(script, devices, "RESULT ")
    assert result["devices"] == devices
    return result["runs"]


@pytest.mark.slow
def test_every_backbone_trains_with_the_techniques_and_matches_on_1_and_8_devices(data_dir, teacher, tmp_path):
    one = _train(1, data_dir, teacher, tmp_path / "one")
    eight = _train(8, data_dir, teacher, tmp_path / "eight")
    assert set(one) == {f"{b} {v}" for b in BACKBONES for v in ("combination", "formulation")}
    assert set(eight) == {f"{b} combination" for b in BACKBONES}
    for name, run in one.items():
        terms = set(run["losses"][0])
        assert {"loss_repa"} <= terms and ({"loss_contrastive"} if "combination" in name else {"loss_pdino"}) <= terms
        assert all(np.isfinite(v) for step in run["losses"] for v in step.values()), (name, run["losses"])
    for name, run in eight.items():
        for step_one, step_eight in zip(one[name]["losses"], run["losses"]):
            assert step_one.keys() == step_eight.keys()
            for term in step_one:
                np.testing.assert_allclose(step_eight[term], step_one[term], rtol=2e-5, atol=1e-6,
                                           err_msg=f"{name} {term}")
        assert run["count"] == one[name]["count"]
        np.testing.assert_allclose(run["params"], one[name]["params"], rtol=1e-5, err_msg=name)
        assert run["attention"] == one[name]["attention"] == "flash"  # 'auto' on the CPU: t2ijax/models/flash.py


@pytest.mark.parametrize("fields, message", [
    ({"model.name": "uvit", "routing.method": "tread"}, "U-ViT's long skip connections .* cannot take"),
    ({"model.name": "mmdit", "model.final_conv": False}, r"config.model.final_conv=False applies to uvit only, not to "
                                                          r"config.model.name='mmdit'"),
    ({"model.name": "dit_cross", "model.time_factor": 500.0}, "applies to prx only"),
    ({"model.name": "flux", "model.axes_dim": (8, 8)}, "must be 3 even sizes summing to the head dim 16"),
    ({"model.name": "flux", "model.double_blocks": 3}, r"double_blocks=3 must be in 0..model.depth=2"),
    ({"model.name": "flux", "model.guidance_embeds": True}, "guidance-distillation objective"),
    ({"model.name": "dit"}, "dit_cross, flux, mmdit, prx, uvit"),
])
def test_a_field_or_technique_a_backbone_cannot_take_is_one_line(data_dir, fields, message):
    with pytest.raises(ConfigError, match=message) as error:
        validate(apply(tiny_config(data_dir), fields), 1)
    assert "\n" not in str(error.value)
