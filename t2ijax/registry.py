"""Every axis's allowed names (NAMES), and the name -> implementation tables that implement them.

Each axis of the design space is one config field whose allowed names are written once, here, so
that validation (t2ijax/config.py) can list them before any compute without importing the code
that implements them. The module that implements a field reads its names from here: a Registry
(`PATHS = Registry("diffusion.path")`, `@PATHS.register("vp_cosine")` next to each implementation)
refuses at import a name NAMES does not declare, and a module that branches on the name itself
holds `names(field)` (a tuple). tests/test_config_imports.py checks that every declared name is
implemented. This module imports nothing from t2ijax, and nothing heavy.
"""
from typing import Callable, TypeVar

T = TypeVar("T")

DTYPES = ("bfloat16", "float32")  # the string goes to jnp.dtype
_PREDICTIONS = ("epsilon", "v", "velocity", "x0")

# Field -> its allowed names, in docs/configuration.md's order: sorted for a Registry's field, the
# owner's order for a tuple's.
NAMES: dict[str, tuple[str, ...]] = {
    "data.name": ("compose", "image_folder", "parquet", "shapes", "webdataset"),  # data/sources.py
    "data.augmentation": ("crop", "flip", "flip_crop", "none"),  # data/augmentation.py
    "data.text_dtype": ("bfloat16", "float16", "float32"),  # data/write_records.py STORAGE_DTYPES
    "data.latent_dtype": ("bfloat16", "float16", "float32"),
    "data.bad_records": ("fail", "skip"),  # data/records.py
    "text_encoder.init": ("pretrained", "random"),  # models/text/loading.py INITS
    "text_encoder.dtype": DTYPES,
    "text_encoder.clean": ("basic", "deepfloyd", "none"),  # models/text/cleaning.py
    "latents.normalization": ("channel_stats", "config_factors", "global_stats", "none"),
    "latents.posterior": ("mode", "sample"),  # data/write_records.py POSTERIORS
    "model.name": ("dit_cross", "flux", "mmdit", "prx", "uvit"),  # models/build.py MODELS
    "model.dtype": DTYPES,
    "model.param_dtype": DTYPES,
    "model.remat_policy": ("dots", "dots_with_no_batch_dims", "full", "none"),  # models/prx.py
    "model.attention_impl": ("auto", "cudnn", "flash", "splash", "xla"),  # models/layers.py, models/build.py
    "model.pos_embed": ("learned_absolute", "rope_2d", "rope_2d_normalized"),  # models/prx.py
    "model.resolution_cond": ("none", "tokens", "vec"),  # models/build.py
    "diffusion.path": ("rectified_flow", "vp_cosine", "vp_linear"),  # diffusion/paths.py
    "diffusion.beta_schedule": ("linear", "scaled_linear"),  # diffusion/paths.py
    "diffusion.prediction": _PREDICTIONS,  # diffusion/parameterization.py
    "diffusion.loss_space": ("prediction", *_PREDICTIONS),  # diffusion/losses.py: its own, or any
    "diffusion.loss_weighting": ("edm", "min_snr", "sigmoid", "uniform"),  # diffusion/losses.py
    "diffusion.timesteps": ("cosmap", "discrete", "logit_normal", "mode", "uniform"),
    "diffusion.shift_mode": ("fixed", "resolution"),  # diffusion/timesteps.py
    "optim.name": ("adamw", "muon"),  # training/optim.py
    "routing.method": ("none", "tread", "sprint"),  # techniques/routing.py METHODS
    "sampler.weak_branch": ("routed", "unconditional"),  # diffusion/generate.py
    "repa.projector": ("mlp", "conv", "attention"),  # techniques/repa.py PROJECTORS
    "optim.schedule": ("constant", "cosine"),  # training/optim.py
    "sampler.name": ("ddim", "dpmpp_2m", "euler", "flow_match_euler", "heun"),  # diffusion/samplers
    "nonfinite.policy": ("halt", "skip"),  # training/nonfinite.py POLICIES
    "teacher.name": ("none", "dinov2", "dinov3", "autoencoder"),  # techniques/teachers.py TEACHERS
    # Fields that take more than these names, checked by their own functions in config.py:
    "autoencoder.name": ("identity",),  # or a diffusers-format directory
    "eval.metrics": ("loss_t", "composition", "fid", "fd_dinov2", "fd_random_inception", "cmmd",
                     "dino_mmd"),  # a tuple of them; metrics/evaluation.py METRICS
}
OPEN_FIELDS = ("autoencoder.name", "eval.metrics")  # not a single name out of NAMES


def names(field: str) -> tuple[str, ...]:
    """The allowed names of config field `field` (a key of NAMES)."""
    return NAMES[field]


def declare(field: str, name: str) -> None:
    """Adds `name` to the allowed names of Registry field `field`, for an implementation registered
    outside t2ijax (launch/quality_sweep.py's in-memory dataset); validation accepts it from then
    on."""
    if name not in NAMES[field]:
        NAMES[field] = (*NAMES[field], name)


class Registry:
    """A named table of implementations for one config field (e.g. `diffusion.path`), whose names
    are declared in NAMES[field]."""

    def __init__(self, field: str):
        if field not in NAMES:
            raise ValueError(f"Registry('{field}'): declare its names in t2ijax/registry.py NAMES")
        self.field = field
        self._entries: dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if name not in NAMES[self.field]:
            raise ValueError(f"{self.field}: '{name}' is not declared in t2ijax/registry.py NAMES "
                             "(or, outside t2ijax, by registry.declare)")

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.field}: '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def missing(self) -> list[str]:
        """Names declared in NAMES[field] that no implementation registered (none, once the owner
        module is imported)."""
        return [name for name in NAMES[self.field] if name not in self._entries]

    def get(self, name: str):
        if name not in self._entries:
            raise ValueError(f"config.{self.field}='{name}' is not one of: {', '.join(self.names())}")
        return self._entries[name]
