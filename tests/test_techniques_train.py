"""Every issue-7 technique trains on the tiny config alone and in combinations (PRX's among them), and
on an 8-device CPU mesh the combinations give the same losses as on 1 device; bad technique configs
are one-line errors."""
import os

import numpy as np
import pytest

from conftest import printed_json, tiny_config
from t2ijax.config import validate
from t2ijax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2


def variants(teacher: str) -> dict[str, dict]:
    """Each technique alone, and three combinations that between them hold every technique: PRX's, and
    the two techniques PRX's leaves out (SPRINT, iREPA's conv projector, P-DINO, accumulation)."""
    dino = {"teacher.name": "dinov2", "teacher.path": teacher}
    tread = {"routing.method": "tread", "routing.start": 0, "routing.end": 0}
    sprint = {"routing.method": "sprint", "routing.start": 0, "routing.end": 0}
    irepa = {"repa.weight": 0.5, "repa.layer": 1, "repa.projector": "conv", "repa.spatial_norm": True, **dino}
    return {
        "tread": tread,
        "sprint": sprint,
        "repa": {"repa.weight": 0.5, "repa.layer": 0, **dino},
        "irepa": irepa,
        "contrastive": {"contrastive.weight": 0.1},
        "pdino": {"perceptual.dino_weight": 0.1, **dino},
        "microbatches": {"optim.microbatches": 2},
        "muon": {"optim.name": "muon"},
        "prx_combination": {"repa.weight": 0.5, "repa.layer": 0, "repa.projector": "attention", **dino, **tread,
                            "contrastive.weight": 0.1, "ema.decay": 0.9, "optim.name": "muon"},
        "sprint_irepa": {**sprint, **irepa},
        "pdino_microbatches": {"perceptual.dino_weight": 0.1, **dino, "optim.microbatches": 2},
    }


ON_THE_MESH = ("prx_combination", "sprint_irepa", "pdino_microbatches")  # compiling for 8 devices is the cost


RUN_VARIANTS = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from conftest import tiny_config
from test_techniques_train import ON_THE_MESH, STEPS, apply, variants
from t2ijax.training.loop import Run

out = {{}}
for name, fields in variants({teacher!r}).items():
    if jax.device_count() > 1 and name not in ON_THE_MESH:
        continue
    run = Run(apply(tiny_config({data_dir!r}), fields), {workdir!r} + "/" + name).setup()
    state, losses = run.state, []
    for step in range(STEPS):
        state, metrics = run.train_step(state, run.device_batch(step))
        losses.append({{k: float(v) for k, v in metrics.items() if k.startswith("loss")}})
    out[name] = losses
print("LOSSES " + json.dumps({{"devices": jax.device_count(), "losses": out}}))
"""


def apply(config, fields: dict):
    for dotted, value in fields.items():
        section, name = dotted.split(".")
        config[section][name] = value
    return config


def _losses(devices: int, data_dir: str, teacher: str, workdir) -> dict:
    script = RUN_VARIANTS.format(tests=os.path.join(REPO, "tests"), data_dir=data_dir, teacher=teacher,
                                 workdir=str(workdir))
    result = printed_json(script, devices, "LOSSES ")
    assert result["devices"] == devices
    return result["losses"]


@pytest.mark.slow
def test_each_technique_trains_and_the_combinations_match_on_1_and_8_devices(data_dir, teacher, tmp_path):
    one = _losses(1, data_dir, teacher, tmp_path / "one")
    eight = _losses(8, data_dir, teacher, tmp_path / "eight")
    expected_terms = {"repa": {"loss_repa"}, "irepa": {"loss_repa"}, "contrastive": {"loss_contrastive"},
                      "pdino": {"loss_pdino"}, "prx_combination": {"loss_repa", "loss_contrastive"},
                      "sprint_irepa": {"loss_repa"}, "pdino_microbatches": {"loss_pdino"}}
    assert set(eight) == set(ON_THE_MESH) and set(one) == set(variants(teacher))
    for name, steps in one.items():
        assert all(np.isfinite(v) for step in steps for v in step.values()), (name, steps)
        assert expected_terms.get(name, set()) <= set(steps[0]), (name, steps[0])
    for name in ON_THE_MESH:
        for step_one, step_eight in zip(one[name], eight[name]):
            assert step_one.keys() == step_eight.keys()
            for term in step_one:
                np.testing.assert_allclose(step_eight[term], step_one[term], rtol=2e-5, atol=1e-6,
                                           err_msg=f"{name} {term}")


@pytest.mark.parametrize("fields, message", [
    ({"repa.weight": 0.5, "repa.layer": 7, "teacher.name": "dinov2", "teacher.path": "x"}, "beyond the model's 2 blocks"),
    ({"repa.weight": 0.5, "repa.layer": 0, "teacher.name": "none"}, "config.repa.weight"),
    ({"repa.weight": 0.5, "repa.layer": 0, "repa.projector": "conv", "routing.method": "tread", "routing.start": 0,
      "routing.end": 1, "teacher.name": "dinov2", "teacher.path": "x"}, "conv projector has no grid"),
    ({"routing.method": "tread", "routing.start": 1, "routing.end": 2}, "not inside the model's 2 blocks"),
    ({"routing.method": "sprint", "routing.start": 0, "routing.end": 0, "routing.rate": 1.0}, "must be inside (0, 1)"),
    ({"routing.method": "route_all"}, "config.routing.method"),
    ({"optim.microbatches": 3}, "must be >= 1 and divide data.global_batch_size=8"),
    ({"data.global_batch_size": 1, "contrastive.weight": 0.1}, "at least 2 examples in data.global_batch_size"),
    ({"perceptual.lpips_weight": 0.1}, "LPIPS requested with no weights"),
    ({"sampler.weak_branch": "routed"}, "needs routing.method='tread'"),
])
def test_bad_technique_configs_are_one_line_errors(data_dir, fields, message):
    with pytest.raises(ConfigError, match=None) as error:
        validate(apply(tiny_config(data_dir), fields), num_devices=1)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
