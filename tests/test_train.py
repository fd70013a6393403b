"""The training step learns, checkpoints restore exactly, runs resume, and sharding changes nothing."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import env_with_devices, tiny_config
from t2ijax.training.checkpoint import Checkpointer
from t2ijax.training.loop import Run, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    config = tiny_config(data_dir)
    config.optim.update(schedule="constant", warmup_steps=1, learning_rate=3e-3)
    config.ema.decay = 0.9
    return Run(config, str(tmp_path_factory.mktemp("run"))).setup()


def test_loss_falls_on_a_fixed_batch(run):
    batch = run.device_batch(0)
    state, losses = run.state, []
    for _ in range(60):
        state, metrics = run.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    run.state = state
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)


def test_checkpoint_restores_everything_exactly(run, tmp_path):
    state = run.state
    for step in (1, 2):  # the warmup's first step has lr 0: alone, it would leave the params (and EMA) as they were
        state, _ = run.train_step(state, run.device_batch(step))
    run.state = state
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), keep=2, async_save=True)
    checkpointer.save(state, run.counters)
    checkpointer.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = Checkpointer(str(tmp_path / "ckpt"), keep=2).restore(abstract)
    assert int(restored.step) == int(state.step) > 0
    assert _leaves_equal(restored.params, state.params)
    assert _leaves_equal(restored.opt_state, state.opt_state)
    assert _leaves_equal(restored.ema_params, state.ema_params)
    assert not _leaves_equal(state.ema_params, state.params)
    np.testing.assert_array_equal(restored.rng, state.rng)
    assert jax.tree.structure(restored) == jax.tree.structure(state)


def test_checkpoints_under_a_relative_workdir(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpointer = Checkpointer("relative/checkpoints", keep=1, async_save=True)
    checkpointer.save(run.state, run.counters)
    checkpointer.close()
    assert Checkpointer("relative/checkpoints", keep=1).latest_step() == int(run.state.step)


def test_train_writes_outputs_and_resumes_from_the_right_step(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.optim.schedule = "constant"  # a cosine schedule depends on total_steps, changed below
    config.ema.update(decay=0.5, every_steps=2)
    outputs = train_and_evaluate(config, str(tmp_path / "resumed"))
    with open(outputs["eval"]) as f:
        metrics = json.load(f)
    assert metrics["step"] == 6
    assert {"composition/colour", "composition/shape", "loss_t[0.0,0.3)", "loss_t[0.6,1.0)"} <= set(metrics)
    assert os.path.exists(outputs["samples"]) and os.listdir(outputs["tensorboard"])

    config.total_steps = 9
    resumed = Run(config, str(tmp_path / "resumed")).setup()
    assert int(resumed.state.step) == 6
    resumed.train()
    straight = Run(config, str(tmp_path / "straight")).setup()
    assert int(straight.state.step) == 0
    straight.train()
    assert int(resumed.state.step) == int(straight.state.step) == 9
    assert _leaves_equal(resumed.state.params, straight.state.params)
    assert _leaves_equal(resumed.state.ema_params, straight.state.ema_params)
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["3", "6", "9"]

    out = tmp_path / "sample.png"
    subprocess.run([sys.executable, "-m", "t2ijax.sample", f"--workdir={tmp_path / 'resumed'}", "--prompt",
                    "A large red circle on the left, on a black background.", f"--out={out}", "--steps=3"],
                   cwd=REPO, check=True, timeout=300)
    assert Image.open(out).size == (4 * 32, 4 * 32)


SHARDED_STEPS = textwrap.dedent("""
    import sys, jax, numpy as np
    sys.path.insert(0, "tests")
    from conftest import tiny_config
    from t2ijax.training.loop import Run
    data_dir, workdir, *meshes = sys.argv[1:]
    for name in meshes:  # "fsdp=4,tensor=2": the axes not named have size 1
        config = tiny_config(data_dir)
        sizes = dict(part.split("=") for part in name.split(","))
        config.mesh.update({axis: int(sizes.get(axis, 1)) for axis in ("data", "fsdp", "tensor")})
        run = Run(config, f"{workdir}/{name}").setup()
        assert run.mesh.devices.size == jax.device_count()
        losses = []
        with jax.set_mesh(run.mesh):
            for step in range(3):
                run.state, metrics = run.train_step(run.state, run.device_batch(step))
                losses.append(float(metrics["loss"]))
            # 5 prompts in batches of 4: the second batch is padded, both are split over the mesh.
            images = run.generator(run.state.sampling_params, run.data.validation["text"][:5],
                                   run.data.validation["text_mask"][:5], batch_size=4)
        params = run.state.params
        # Which devices hold a piece of each kernel: the rules put heads and the MLP on the tensor axis.
        pieces = {jax.tree_util.keystr(p): np.array(x.sharding.shard_shape(x.shape))
                  for p, x in jax.tree_util.tree_leaves_with_path(params)}
        leaves = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(f"{workdir}/{name}.npz", losses=np.array(losses), images=images, **leaves)
        np.savez(f"{workdir}/{name}.shards.npz", **pieces)
""")


def _sharded_runs(data_dir, workdir, devices, meshes):
    env = env_with_devices(devices)
    subprocess.run([sys.executable, "-c", SHARDED_STEPS, data_dir, str(workdir), *meshes],
                   cwd=REPO, env=env, check=True, timeout=600)
    return {name: (dict(np.load(f"{workdir}/{name}.npz")), dict(np.load(f"{workdir}/{name}.shards.npz")))
            for name in meshes}


@pytest.mark.slow
def test_train_step_and_generation_on_8_devices_match_1_device(data_dir, tmp_path):
    single, _ = _sharded_runs(data_dir, tmp_path / "one", 1, ["data=1"])["data=1"]
    # The batch split 8 ways (params whole), and the params split over fsdp and tensor at once.
    meshes = ["data=8", "fsdp=4,tensor=2"]
    for name, (sharded, shards) in _sharded_runs(data_dir, tmp_path / "eight", 8, meshes).items():
        np.testing.assert_allclose(sharded.pop("losses"), single["losses"], rtol=1e-5, err_msg=name)
        assert single["images"].shape == sharded["images"].shape == (5, 32, 32, 3)
        # uint8 pixels: float reassociation across devices may flip a rounding, nothing more.
        assert np.abs(single["images"].astype(int) - sharded.pop("images").astype(int)).max() <= 1, name
        assert sharded.keys() == single.keys() - {"losses", "images"}
        for key in sharded:
            np.testing.assert_allclose(sharded[key], single[key], atol=2e-6, rtol=1e-4, err_msg=f"{name} {key}")
        qkv_name, gate_name = "['blocks']['attention']['img_qkv']['kernel']", "['blocks']['gate_proj']['kernel']"
        qkv, gate, full_qkv, full_gate = shards[qkv_name], shards[gate_name], single[qkv_name], single[gate_name]
        # [layers, embed, 3, heads, head_dim] and [layers, embed, mlp]: embed over fsdp, heads and mlp over tensor.
        fsdp, tensor = (4, 2) if name == "fsdp=4,tensor=2" else (1, 1)
        assert tuple(qkv) == (full_qkv.shape[0], full_qkv.shape[1] // fsdp, 3, full_qkv.shape[3] // tensor,
                              full_qkv.shape[4]), name
        assert tuple(gate) == (full_gate.shape[0], full_gate.shape[1] // fsdp, full_gate.shape[2] // tensor), name
