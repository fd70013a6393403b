"""t2ijax.bench: the JSON every suite writes, how its fields relate, and bad input (not speeds)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import bench_cpu, bench_gpu
from conftest import tiny_config
from t2ijax.benchmarks import flops, suites
from t2ijax.benchmarks.attention import attention_inputs
from t2ijax.benchmarks.op_profile import op_sources
from t2ijax.benchmarks.data import data_suite
from t2ijax.benchmarks.synthetic import bench_model, check, synthetic
from t2ijax.models.build import attention_for
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.models.layers import masked_attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = {"model.hidden_size": 32, "model.depth": 2, "model.num_heads": 2, "bench.batch_size": 2,
        "bench.latent_size": 8, "bench.latent_channels": 4, "bench.text_length": 8, "bench.text_dim": 16,
        "bench.matmul_size": 128, "bench.compile_depth": 1, "sampler.steps": 2}
TRAIN = {"matmul_peak_gflops_per_device", "images_per_s", "image_tokens_per_s", "step_ms", "parameters",
         "model_flops_per_step", "xla_flops_per_step", "model_gflops_per_s", "mfu", "compile_s",
         "planned_bytes", "temp_bytes", "device_peak_bytes"}
SAMPLE = {"images_per_s", "loop_ms", "sampler", "sampler_steps", "guidance", "network_evaluations", "compile_s"}
COMPILE = {"depth", "scan_layers", "lower_s", "compile_s", "compile_depth", "compile_depth_lower_s",
           "compile_depth_compile_s", "ratio"}


def bench(*args, overrides=TINY, env=None):
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    return subprocess.run([sys.executable, "-m", "t2ijax.bench", "--config=configs/bench_cpu.py", *flags,
                           *args], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def test_json_of_the_train_sample_and_compile_suites(tmp_path):
    out = tmp_path / "bench.json"
    tuned = {k: v for k, v in os.environ.items() if k != "T2IJAX_MALLOC"}  # the commands' default allocator
    result = bench("--suite=train,sample,compile", "--steps=2", "--loops=1", "--noreference", f"--json={out}", env=tuned)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {"date", "machine", "versions", "host_malloc_keeps_freed_blocks", "glibc_tunables", "config", "steps",
            "loops", "suites"} <= set(report)
    assert report["host_malloc_keeps_freed_blocks"] is True  # a CPU-only host (t2ijax/host_memory.py)
    assert {"jax", "flax"} <= set(report["versions"])
    train, sample, compiled = (report["suites"][name] for name in ("train", "sample", "compile"))
    assert set(train) == TRAIN and set(sample) == SAMPLE and set(compiled) == COMPILE

    config = bench_cpu.get_config()
    config.update_from_flattened_dict(TINY)
    model = build_model(config, 4, 16)
    assert train["model_flops_per_step"] == flops.train_step_flops(model, 2, 8, 8, 8)
    assert train["image_tokens_per_s"] == pytest.approx(16 * train["images_per_s"], rel=1e-9)  # 8x8 latent, patch 2
    assert train["mfu"] == pytest.approx(train["model_gflops_per_s"] / train["matmul_peak_gflops_per_device"],
                                         rel=1e-9)
    assert train["step_ms"] == pytest.approx(2e3 / train["images_per_s"], rel=1e-9)
    assert train["xla_flops_per_step"] > 0 and train["planned_bytes"] >= train["temp_bytes"] > 0
    assert (sample["sampler"], sample["sampler_steps"], sample["network_evaluations"]) == ("euler", 2, 4)
    assert sample["images_per_s"] == pytest.approx(2e3 / sample["loop_ms"], rel=1e-9)
    assert (compiled["depth"], compiled["compile_depth"]) == (2, 1)
    total = compiled["lower_s"] + compiled["compile_s"]
    assert compiled["ratio"] == pytest.approx(total / (compiled["compile_depth_lower_s"] +
                                                       compiled["compile_depth_compile_s"]), rel=1e-9)
    assert "train.images_per_s" in result.stdout and "compile.ratio" in result.stdout


@pytest.mark.parametrize("args, overrides, message", [
    (["--suite=speed"], TINY, "unknown --suite speed; choose from train,sample,attention,compile,data,smoke"),
    (["--steps=0"], TINY, "time at least one"),
    (["--noreference"], {**TINY, "bench.latent_size": 9}, "bench.latent_size=9 is not a multiple of model.patch_size=2"),
    (["--noreference"], {**TINY, "repa.weight": 0.5}, "the bench times the denoiser alone"),
    (["--suite=sample"], {**TINY, "sampler.name": "heun"}, "the reference's loop is PRXPipeline's Euler"),
])
def test_bad_input_is_one_line_before_any_compile(args, overrides, message):
    result = bench(*args, overrides=overrides)
    assert result.returncode != 0
    assert message in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_sample_suite_times_the_reference_eager_and_compiled_at_the_same_size():
    config = bench_cpu.get_config()
    config.update_from_flattened_dict({"model.hidden_size": 64, "model.depth": 2, "model.num_heads": 4,
                                       "bench.batch_size": 2, "bench.latent_size": 8, "bench.latent_channels": 4,
                                       "bench.text_length": 6, "bench.text_dim": 32, "sampler.steps": 2})
    result = suites.sample(config, steps=1, loops=1, with_reference=True)
    parameters = sum(x.size for x in jax.tree.leaves(synthetic(config).state.params))
    for mode in ("eager", "compiled"):
        reference = result[f"reference_{mode}"]
        assert reference["parameters"] == parameters
        assert result[f"speedup_vs_{mode}"] == pytest.approx(result["images_per_s"] / reference["images_per_s"],
                                                             rel=1e-9)
        assert reference["loop_ms"] == pytest.approx(1e3 * 2 / reference["images_per_s"], rel=1e-9)


def test_attention_suite_times_the_cpus_implementations_against_sdpa_on_inputs_meaning_the_same():
    import torch

    config = bench_cpu.get_config()
    config.update_from_flattened_dict({**TINY, "bench.text_length": 6})
    result = suites.attention(config, steps=1, loops=1, with_reference=True)
    assert {k: result[k] for k in ("queries", "keys", "heads", "head_dim", "batch_size")} == \
        dict(queries=16, keys=22, heads=2, head_dim=16, batch_size=2)  # 8x8 latents at patch 2, 6 text tokens
    assert {"xla", "flash"} <= set(result) and not {"cudnn", "splash"} & set(result)
    for impl in ("xla", "flash"):
        assert result[f"{impl}_over_sdpa"] == pytest.approx(
            result[impl]["forward_backward_ms"] / result["reference_sdpa"]["forward_backward_ms"], rel=1e-9)
    # the reference attends over the same keys: torch's boolean mask keeps where True, as key_mask does
    inputs = attention_inputs(config)
    assert inputs["key_mask"][:, 3:6].sum() == 0 and inputs["key_mask"][:, :3].all()
    heads_first = lambda name: torch.tensor(inputs[name]).transpose(1, 2)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        heads_first("q"), heads_first("k"), heads_first("v"), attn_mask=torch.tensor(inputs["key_mask"])[:, None, None])
    ours = masked_attention(*(inputs[name] for name in ("q", "k", "v", "key_mask")), "flash")
    np.testing.assert_allclose(np.asarray(ours), theirs.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-6)


def test_op_profile_sums_the_steps_op_time_by_model_code():
    hlo = ('  %fusion.2 = f32[2]{0} fusion(f32[2]{0} %p), kind=kLoop, metadata={op_name="jit(train_step)/'
           'transpose(jvp(PRX))/PRX._blocks/PRXBlock_3/up_proj/dot_general" stack_frame_id=1}')
    assert op_sources(hlo) == {"fusion.2": "PRXBlock_N/up_proj/dot_general"}
    flags = [f"--config.{key}={value}" for key, value in TINY.items()]
    done = subprocess.run([sys.executable, "-m", "t2ijax.benchmarks.op_profile", "--config=configs/bench_cpu.py",
                           "--steps=1", "--top=50", *flags], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("wall ") and len(lines) == 51  # 50 sources of the step's ops
    shares = [float(line.split()[2]) for line in lines[1:]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5
    assert any(line.endswith("PRXBlock_N/up_proj/dot_general") for line in lines)


def test_the_accelerator_config_is_valid_and_counts_prx_small_flops():
    config = bench_gpu.get_config()
    check(config)  # what the bench checks before compiling anything
    b = config.bench
    model = build_model(config, b.latent_channels, b.text_dim)
    per_image = flops.train_step_flops(model, 1, b.latent_size, b.latent_size, b.text_length)
    # 3 x 2 x 256 tokens x the ~0.89B weights applied per token (the 16 blocks' 0.31B of adaLN modulation act
    # once per image), plus attention and the text K/V
    assert 1.3e12 < per_image < 1.45e12
    assert flops.train_step_flops(model, b.batch_size, b.latent_size, b.latent_size, b.text_length) == \
        b.batch_size * per_image


def test_data_suite_reports_loader_and_step_rates(data_dir):
    result = data_suite(tiny_config(data_dir), steps=2)
    assert set(result) == {"loader_images_per_s", "train_step_images_per_s", "headroom", "global_batch_size",
                           "train_examples"}
    assert result["loader_images_per_s"] > 0 and result["train_step_images_per_s"] > 0
    assert result["headroom"] == pytest.approx(result["loader_images_per_s"] / result["train_step_images_per_s"],
                                               rel=1e-9)
    assert result["global_batch_size"] == 8 and result["train_examples"] == {"train/32/32x32": 256}


def test_the_bench_model_picks_attention_for_the_bench_tokens_not_the_training_size():
    config = bench_cpu.get_config()  # trains on 40 px pixels: 20 x 20 tokens at patch 2, which splash cannot tile
    config.update_from_flattened_dict({"data.resolution": 40, "bench.latent_size": 32, "model.patch_size": 2})
    assert attention_for(config, "tpu") == "xla"
    assert attention_for(config, "tpu", [num_image_tokens(config.model, 32, 32)]) == "splash"  # 256 tokens
    assert attention_for(config, "tpu", [256, 320]) == "xla"
    assert bench_model(config).attention_impl == "flash"  # on this CPU, whatever the sizes
