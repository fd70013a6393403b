"""configs/prx_finetune.py end to end on a tiny random PRX pipeline and a folder of captioned images:
the run starts from the pipeline's weights, trains, resumes from its own checkpoint, and exports
weights diffusers loads."""
import jax
import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_prx import PRXTransformer2DModel
from PIL import Image

from configs import prx_finetune
from prx_reference import reference_forward, save_tiny_prx_pipeline
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.interop import prx_from_diffusers
from t2ijax.interop.run_export import export_run
from t2ijax.interop.finetune import resolve_init_from
from t2ijax.training.loop import Run


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("finetune") / "prx"
    save_tiny_prx_pipeline(directory)
    return directory


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(12):
        size = (24, 16) if i % 2 else (16, 20)  # landscape and portrait: center-cropped to squares
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), np.uint8)).save(directory / f"img_{i:02d}.png")
        (directory / f"img_{i:02d}.txt").write_text(f"w{i + 1} w{(i * 7) % 90 + 2} w{i % 5 + 10}")
    return directory


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    """One data directory for the runs that read the same photos with the same text encoder: built once."""
    return tmp_path_factory.mktemp("shared_data")


def finetune_config(pipeline_dir, photos, data_dir, total_steps=3):
    c = prx_finetune.get_config()
    c.init_from = str(pipeline_dir)
    c.total_steps = total_steps
    c.data.update(path=str(photos), data_dir=str(data_dir), resolution=16, num_validation=4, global_batch_size=4)
    c.text_encoder.update(max_length=12, dtype="float32")
    c.model.update(dtype="float32", remat_policy="none")
    c.sampler.steps = 2
    c.optim.update(learning_rate=1e-3, warmup_steps=1)
    c.ema.update(decay=0.5, every_steps=1)
    c.checkpoint.update(every_steps=3, async_save=False)
    c.sample.update(every_steps=0, prompts=("w1 w2", "w3"))
    c.eval.update(every_steps=0, num_samples=4, loss_examples=4, batch_size=4)
    c.log.every_steps = 1
    return c


@pytest.mark.slow
def test_finetune_starts_from_the_pipeline_resumes_and_exports(pipeline_dir, photos, tmp_path):
    workdir = str(tmp_path / "run")
    config = finetune_config(pipeline_dir, photos, tmp_path / "data")
    run = Run(config, workdir).setup()
    assert (config.model.hidden_size, config.model.depth, tuple(config.model.axes_dim)) == (64, 2, (8, 8))
    assert config.autoencoder.name == f"{pipeline_dir}/vae" and config.text_encoder.tokenizer == f"{pipeline_dir}/tokenizer"
    _, released = prx_from_diffusers(str(pipeline_dir))
    for tree in (run.state.params, run.state.ema_params):
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(tree), jax.device_get(released))
    run.train()

    resumed = Run(finetune_config(pipeline_dir, photos, tmp_path / "data", total_steps=4), workdir).setup()
    assert int(resumed.state.step) == 3  # its own checkpoint, not the pipeline's weights again
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.state.params), jax.device_get(run.state.params))
    assert not np.array_equal(jax.device_get(run.state.params["img_in"]["kernel"]), released["img_in"]["kernel"])

    out = tmp_path / "exported"
    step, what = export_run(workdir, str(out))
    assert (step, what) == (3, "EMA params")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = np.array([0.3, 0.9], np.float32)
    text = rng.standard_normal((2, 12, 32)).astype(np.float32)
    mask = np.arange(12)[None] < np.array([[5], [12]])
    expected = run.model.apply({"params": run.state.ema_params}, x, t, text, mask)
    with torch.no_grad():
        reloaded = PRXTransformer2DModel.from_pretrained(out).eval()
    np.testing.assert_allclose(reference_forward(reloaded, x, t, text, mask), np.asarray(expected), atol=1e-5)


def test_bad_finetune_configs_fail_before_compute(pipeline_dir, photos, tmp_path):
    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.init_from = ""
    with pytest.raises(ConfigError, match=r"refers to \{init_from\} but config.init_from is empty"):
        resolve_init_from(config)

    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="is not a directory"):
        resolve_init_from(config)

    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.init_from = str(pipeline_dir / "vae")
    with pytest.raises(ConfigError, match="diffusers class AutoencoderKL is not supported; t2ijax reads PRXTransformer2DModel, "):
        resolve_init_from(config)

    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.autoencoder.name = "identity"
    with pytest.raises(ConfigError, match="takes 4 input channels but config.autoencoder.name='identity' gives 3"):
        resolve_init_from(config)

    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.text_encoder.update(path="", tokenizer="", name="all-MiniLM-L6-v2", clean="none")
    with pytest.raises(ConfigError, match="reads text of width 32 but the text encoder in .* gives 384"):
        resolve_init_from(config)

    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.data.path = ""
    resolve_init_from(config)
    with pytest.raises(ConfigError, match="config.data.path is empty"):
        validate(config, 1)


def test_a_hub_id_fetches_the_whole_pipeline(pipeline_dir, photos, tmp_path, monkeypatch):
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns: asked.append((repo_id, allow_patterns)) or str(pipeline_dir))
    config = finetune_config(pipeline_dir, photos, tmp_path)
    config.init_from = "Photoroom/prx-tiny"
    resolve_init_from(config)
    assert asked[0] == ("Photoroom/prx-tiny", None)  # text_encoder/, tokenizer/ and vae/ too, not the transformer only
    assert config.text_encoder.path == f"{pipeline_dir}/text_encoder" and config.model.hidden_size == 64


def _tiny_transformer(backbone: str):
    """A random diffusers transformer of `backbone`'s class that reads the tiny pipeline's inputs: 4 latent
    channels, 32-wide text (also the pooled width, which t2ijax fills with the text's mean)."""
    import flux_reference
    import pixart_reference
    import sd3_reference

    heads = dict(num_attention_heads=2, attention_head_dim=8)
    if backbone == "dit_cross":
        return pixart_reference.reference_pixart(dict(
            heads, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16, caption_channels=32,
            sample_size=8, patch_size=2, norm_type="ada_norm_single", use_additional_conditions=False))
    if backbone == "mmdit":
        return sd3_reference.reference_sd3(dict(
            heads, sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
            joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8,
            qk_norm="rms_norm"))
    return flux_reference.reference_flux(dict(
        heads, patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, joint_attention_dim=32,
        pooled_projection_dim=32, axes_dims_rope=(2, 2, 4)))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["dit_cross", "mmdit", "flux"])
def test_pixart_sd3_and_flux_transformers_fine_tune_like_prx(backbone, pipeline_dir, photos, shared_data, tmp_path):
    """The tiny pipeline with its transformer swapped for another class: init_from picks the backbone and its
    architecture, the run starts from the checkpoint's weights and trains."""
    import shutil

    from t2ijax.interop import from_diffusers

    pipe = tmp_path / "pipe"
    shutil.copytree(pipeline_dir, pipe, ignore=shutil.ignore_patterns("transformer"), symlinks=True)
    _tiny_transformer(backbone).save_pretrained(pipe / "transformer")
    config = finetune_config(pipe, photos, shared_data, total_steps=1)
    run = Run(config, str(tmp_path / "run")).setup()
    assert config.model.name == backbone and config.model.hidden_size == 16 and config.model.mlp_ratio == 4.0
    _, released = from_diffusers(str(pipe))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.state.params), released)
    state, metrics = run.train_step(run.state, run.device_batch(0))
    assert np.isfinite(float(metrics["loss"]))


def test_a_transformer_reading_another_pooled_encoder_is_refused(pipeline_dir, photos, tmp_path):
    import shutil

    import flux_reference

    pipe = tmp_path / "pipe"
    shutil.copytree(pipeline_dir, pipe, ignore=shutil.ignore_patterns("transformer"))
    flux_reference.reference_flux(dict(num_attention_heads=2, attention_head_dim=8, patch_size=1, in_channels=16,
                                       num_layers=1, num_single_layers=1, joint_attention_dim=32,
                                       pooled_projection_dim=12, axes_dims_rope=(2, 2, 4))
                                  ).save_pretrained(pipe / "transformer")
    with pytest.raises(ConfigError, match="adds a 12-wide pooled text vector .* it pools the text it reads "
                                          r"\(32 wide\)"):
        resolve_init_from(finetune_config(pipe, photos, tmp_path / "data"))
