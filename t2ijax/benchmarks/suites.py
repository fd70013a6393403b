"""Each suite of `python -m t2ijax.bench` as one call: the JAX measurement, then the PyTorch reference's
at the same configuration and the ratios (JAX images/s over the reference's)."""
from t2ijax.benchmarks import reference
from t2ijax.benchmarks.attention import IMPLEMENTATIONS, attention_inputs, attention_suite
from t2ijax.benchmarks.compile import compile_suite
from t2ijax.benchmarks.data import data_suite
from t2ijax.benchmarks.sample import sample_suite
from t2ijax.benchmarks.smoke import smoke_suite
from t2ijax.benchmarks.synthetic import check
from t2ijax.benchmarks.timing import matmul_peak_flops
from t2ijax.benchmarks.train import train_suite
from t2ijax.errors import ConfigError
from t2ijax.models.build import build_model

MODES = {"eager": False, "compiled": True}  # the reference under torch.compile or not
REFERENCE_SAMPLERS = ("euler", "flow_match_euler")  # the samplers whose work PRXPipeline's loop does


def _reference_fields(config) -> dict:
    return reference.reference_fields(build_model(config, config.bench.latent_channels, config.bench.text_dim))


def _shapes(config) -> dict:
    b = config.bench
    return {k: b[k] for k in ("batch_size", "latent_size", "latent_channels", "text_length", "text_dim")}


def _with_reference(result: dict, measure) -> dict:
    for mode, compiled in MODES.items():
        result[f"reference_{mode}"] = theirs = measure(compiled)
        result[f"speedup_vs_{mode}"] = result["images_per_s"] / theirs["images_per_s"]
    return result


def train(config, steps: int, loops: int, with_reference: bool) -> dict:
    check(config)  # and the reference's fields: bad input fails before anything compiles
    fields, shapes = (_reference_fields(config), _shapes(config)) if with_reference else (None, None)
    peak = matmul_peak_flops(config.bench.matmul_size, config.model.dtype)
    result = {"matmul_peak_gflops_per_device": peak / 1e9, **train_suite(config, steps, peak)}
    if not with_reference:
        return result
    return _with_reference(result, lambda compiled: reference.reference_train(fields, shapes, steps, compiled,
                                                                                 dtype=config.model.dtype))


def sample(config, steps: int, loops: int, with_reference: bool) -> dict:
    check(config)
    if with_reference and config.sampler.name not in REFERENCE_SAMPLERS:
        raise ConfigError(f"the reference's loop is PRXPipeline's Euler, not sampler.name={config.sampler.name}; "
                          f"bench one of {', '.join(REFERENCE_SAMPLERS)} against it, or pass --noreference")
    fields, shapes = (_reference_fields(config), _shapes(config)) if with_reference else (None, None)
    result = sample_suite(config, loops)
    if not with_reference:
        return result
    s = config.sampler
    return _with_reference(result, lambda compiled: reference.reference_sample(
        fields, shapes, s.steps, float(s.guidance), loops, compiled, dtype=config.model.dtype))


def attention(config, steps: int, loops: int, with_reference: bool) -> dict:
    check(config)
    result = attention_suite(config, steps)
    if not with_reference:
        return result
    result["reference_sdpa"] = theirs = reference.reference_attention(attention_inputs(config), steps,
                                                                      dtype=config.model.dtype)
    for impl in IMPLEMENTATIONS:
        if impl in result:  # above 1: slower than torch's fused kernel
            result[f"{impl}_over_sdpa"] = result[impl]["forward_backward_ms"] / theirs["forward_backward_ms"]
    return result


def compile_times(config, steps: int, loops: int, with_reference: bool) -> dict:
    check(config)
    return compile_suite(config)


# name -> (config, steps, loops, with_reference) -> result
SUITES = {"train": train, "sample": sample, "attention": attention, "compile": compile_times,
          "data": lambda config, steps, loops, with_reference: data_suite(config, steps),
          "smoke": lambda config, steps, loops, with_reference: smoke_suite(config, steps)}
