"""A diffusers PRX pipeline directory in t2ijax: the same latents as PRXPipeline for the same noise."""
import json

import numpy as np
import pytest
import torch

from prx_reference import save_tiny_prx_pipeline
from t2ijax.errors import ConfigError
from t2ijax.interop import load_prx_pipeline

PROMPTS = ["w1 w2 w3 w4", "W5 <b>w6</b> https://example.com/a.png w7"]  # the second one needs cleaning


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prx_pipeline") / "pipe"
    return directory, save_tiny_prx_pipeline(directory)


def test_latents_and_images_match_diffusers_pipeline(pipeline_dir):
    directory, reference = pipeline_dir
    noise = np.random.default_rng(0).standard_normal((2, 8, 12, 4)).astype(np.float32)
    expected = {"latent": [], "pt": []}
    for prompt, row in zip(PROMPTS, noise):  # PRXPipeline repeats t for a batch of one under guidance
        for output_type in expected:
            with torch.no_grad():
                out = reference(prompt, negative_prompt="w9", height=16, width=24, num_inference_steps=4,
                                guidance_scale=4.0, latents=torch.from_numpy(row[None]).permute(0, 3, 1, 2),
                                output_type=output_type, use_resolution_binning=False).images
            expected[output_type].append(out.permute(0, 2, 3, 1).numpy()[0])
    pipe = load_prx_pipeline(str(directory))
    assert pipe.shift == 3.0 and pipe.text_encoder.max_length == 12
    latents = pipe.generate_latents(PROMPTS, noise, steps=4, guidance=4.0, negative_prompt="w9")
    np.testing.assert_allclose(latents, np.stack(expected["latent"]), atol=1e-5, rtol=0)
    images = np.clip(pipe.decode(latents) / 2 + 0.5, 0, 1)  # the pipeline's postprocessing for "pt"
    np.testing.assert_allclose(images, np.stack(expected["pt"]), atol=1e-4, rtol=0)


def test_bad_pipeline_directories(pipeline_dir, tmp_path):
    directory, _ = pipeline_dir
    with pytest.raises(ConfigError, match="has no model_index.json"):
        load_prx_pipeline(str(directory / "transformer"))
    index = json.loads((directory / "model_index.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps(dict(index, _class_name="FluxPipeline")))
    with pytest.raises(ConfigError, match="describes a FluxPipeline, not a PRXPipeline"):
        load_prx_pipeline(str(other))
