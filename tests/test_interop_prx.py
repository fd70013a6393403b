"""diffusers PRX checkpoints in and out: parity with PRXTransformer2DModel, exact round trips, errors."""
import json

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel

from conftest import denoiser_inputs
from prx_reference import reference_forward, reference_prx
from t2ijax.errors import ConfigError
from t2ijax.interop import prx_from_diffusers, prx_to_diffusers

RANDOMIZED = ("modulation", "final_layer.linear")  # with the final projection, every weight shows

CONFIGS = {
    "latent": dict(in_channels=4, patch_size=2, context_in_dim=24, hidden_size=64, num_heads=4, depth=2,
                   axes_dim=[8, 8]),
    "bottleneck+resolution": dict(in_channels=3, patch_size=4, context_in_dim=16, hidden_size=48, num_heads=2,
                                  depth=3, axes_dim=[12, 12], bottleneck_size=20, resolution_embeds=True),
    "uneven_rope+mlp": dict(in_channels=4, patch_size=1, context_in_dim=8, hidden_size=64, num_heads=2, depth=1,
                            axes_dim=[12, 20], mlp_ratio=2.5, theta=2000, time_factor=500.0),
}
SIZES = {"square": (8, 8), "non-square": (8, 12)}


def _inputs(cfg, size, batch=3, length=5, seed=0):
    return denoiser_inputs(batch, size, cfg["in_channels"], length, cfg["context_in_dim"], seed)


@pytest.fixture(scope="module", params=list(CONFIGS))
def saved(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = reference_prx(cfg, randomize=RANDOMIZED)
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return cfg, model, directory


def test_import_matches_diffusers(saved):
    cfg, torch_model, directory = saved
    model, params = prx_from_diffusers(str(directory))
    inputs = _inputs(cfg, SIZES["non-square"])  # square sizes: test_sharded_export_and_pipeline_layout
    got = np.asarray(jax.jit(model.apply)({"params": params}, *inputs))
    np.testing.assert_allclose(got, reference_forward(torch_model, *inputs), atol=1e-5, rtol=0)


def test_export_loads_in_diffusers_and_round_trips_exactly(saved, tmp_path):
    cfg, torch_model, directory = saved
    model, params = prx_from_diffusers(str(directory), scan_layers=False)
    prx_to_diffusers(model, params, tmp_path / "export")
    reloaded = PRXTransformer2DModel.from_pretrained(tmp_path / "export").eval()
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    inputs = _inputs(cfg, SIZES["non-square"], seed=1)
    np.testing.assert_array_equal(reference_forward(reloaded, *inputs), reference_forward(torch_model, *inputs))

    _, again = prx_from_diffusers(str(tmp_path / "export"), scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_sharded_export_and_pipeline_layout(tmp_path):
    cfg = CONFIGS["latent"]
    model, params = prx_from_diffusers(_save(cfg, tmp_path / "src"))
    prx_to_diffusers(model, params, tmp_path / "pipe" / "transformer", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "pipe" / "transformer" /
                        "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    _, again = prx_from_diffusers(str(tmp_path / "pipe"))  # a pipeline directory: its transformer/
    jax.tree.map(np.testing.assert_array_equal, again, params)
    reloaded = PRXTransformer2DModel.from_pretrained(tmp_path / "pipe" / "transformer").eval()
    inputs = _inputs(cfg, SIZES["square"])
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, *inputs)),
                               reference_forward(reloaded, *inputs), atol=1e-5, rtol=0)


def _save(cfg, directory):
    reference_prx(cfg, randomize=RANDOMIZED).save_pretrained(directory)
    return str(directory)


def test_bad_directories_name_the_problem(tmp_path):
    cfg = CONFIGS["latent"]
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).save_pretrained(tmp_path / "vae")
    with pytest.raises(ConfigError, match="describes a AutoencoderKL, not a PRXTransformer2DModel"):
        prx_from_diffusers(str(tmp_path / "vae"))
    with pytest.raises(ConfigError, match="is not a directory"):
        prx_from_diffusers(str(tmp_path / "nowhere"))

    source = _save(cfg, tmp_path / "src")
    model, params = prx_from_diffusers(source)
    prx_to_diffusers(model, params, tmp_path / "sharded", max_shard_bytes=20_000)
    next((tmp_path / "sharded").glob("*-00002-of-*.safetensors")).unlink()
    with pytest.raises(ConfigError, match=r"-00002-of-.*\.safetensors is missing"):
        prx_from_diffusers(str(tmp_path / "sharded"))

    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(config, context_in_dim=32)))
    with pytest.raises(ConfigError, match=r"tensor 'txt_in.weight' has shape \(64, 24\), this PRX config needs "
                                          r"\(64, 32\)"):
        prx_from_diffusers(source)
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(config, depth=1)))
    with pytest.raises(ConfigError, match="does not use, e.g. 'blocks.1."):
        prx_from_diffusers(source)
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(config, depth=3)))
    with pytest.raises(ConfigError, match="has no tensor 'blocks.2.modulation.lin.weight'"):
        prx_from_diffusers(source)


def test_export_of_a_run_loads_in_diffusers(run_workdir, tmp_path):
    from t2ijax.interop.run_export import export_run
    from t2ijax.training.checkpoint import COUNTERS, Checkpointer
    from t2ijax.training.restore import load_run_config, restore_run

    config = load_run_config(run_workdir)
    text_shape = (config.text_encoder.max_length, 384)  # MiniLM
    run = restore_run(run_workdir, config, *text_shape)
    leaves, tree = jax.tree.flatten(run.state.params)
    keys = jax.random.split(jax.random.key(0), 2 * len(leaves))
    noisy = lambda offset: jax.tree.unflatten(tree, [0.05 * jax.random.normal(k, x.shape) for k, x in
                                                     zip(keys[offset:], leaves)])
    state = run.state.replace(params=noisy(0), ema_params=noisy(len(leaves)))  # adaLN-Zero would export zeros
    workdir = tmp_path / "run"
    workdir.mkdir()
    config.ema.decay = 0.9  # a run that kept an EMA
    (workdir / "config.json").write_text(config.to_json())
    checkpointer = Checkpointer(str(workdir / "checkpoints"), keep=1)
    checkpointer.save(state, dict.fromkeys(COUNTERS, 0))
    checkpointer.close()

    for ema, expected in ((True, state.ema_params), (False, state.params)):
        step, what = export_run(str(workdir), str(tmp_path / f"out_{ema}"), ema=ema)
        assert step == 0 and what == ("EMA params" if ema else "params")
        reloaded = PRXTransformer2DModel.from_pretrained(tmp_path / f"out_{ema}").eval()
        inputs = _inputs(dict(in_channels=3, context_in_dim=text_shape[1]), (32, 32))
        np.testing.assert_allclose(reference_forward(reloaded, *inputs),
                                   np.asarray(run.model.apply({"params": expected}, *inputs)), atol=1e-5, rtol=1e-5)
