"""Per-device memory, FLOPs and collectives of a config's train step, from an ahead-of-time compile against
the devices present (t2ijax.plan fakes N CPU devices): nothing is allocated and no data is read."""
import collections
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from t2ijax import sharding
from t2ijax.benchmarks import collectives
from t2ijax.benchmarks.flops import train_step_flops
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import geometry
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.models.text.encoder import NO_TEXT
from t2ijax.models.text.loading import read_model_config, resolve_model_dir
from t2ijax.techniques import ema
from t2ijax.techniques.frozen import needs_images
from t2ijax.training import state as train_state
from t2ijax.training.optim import run_optimizer
from t2ijax.training.step import lower_train_step

# Memory per chip: TPU v5e 16 GiB HBM, v5p 95 GiB, H100 80 GB.
ACCELERATORS = {"v5e": 16 * 2**30, "v5p": 95 * 2**30, "H100": 80 * 10**9}


@dataclasses.dataclass
class Plan:
    mesh: dict[str, int]
    dcn_mesh: dict[str, int]        # the part of each mesh axis across slices (all 1 on one slice)
    global_batch: int
    parameters: int                 # scalars in the model
    params_bytes: int               # per device, from the state's shardings
    optimizer_bytes: int
    ema_bytes: int
    batch_bytes: int
    argument_bytes: int             # the compiled executable's memory_analysis(), per device
    output_bytes: int
    alias_bytes: int                # outputs written over donated arguments (the new state)
    temp_bytes: int                 # activations kept for the backward pass, gradients, workspace
    flops_per_step: float           # XLA's count for the whole step, recomputation included
    model_flops_per_image: float    # 3 x the forward matmuls and attention of one image (no recompute)
    collectives: dict               # per kind {count, bytes} per device per step, measured (collectives.compare)
    collectives_ideal: dict         # the same for FSDP gathers and gradients and Megatron all-reduces
    collectives_explained: dict     # reason -> kind -> measured minus ideal
    collective_flags: list          # unexpected traffic
    collective_notes: list
    collective_moves: list          # [{kind, moves, axes, count, bytes}], largest first
    communication_seconds: dict     # chip -> collectives one after another at its bandwidth (estimate_seconds)
    compute_seconds: dict           # chip -> FLOPs per device at its peak
    cross_slice: dict               # per kind {count, bytes}: the part over DCN (collectives.cross_slice)
    cross_slice_moves: list         # [{kind, moves, axes, count, bytes}] of that part, largest first
    dcn_seconds: dict               # chip -> that part one after another at its DCN bandwidth

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def flops_per_image(self) -> float:
        return self.flops_per_step / self.global_batch


def _bytes_per_device(tree) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def text_width(cfg: ml_collections.ConfigDict) -> int:
    """Width of the caption embeddings the denoiser reads, from the encoder's config.json."""
    if cfg.name.lower() == NO_TEXT:
        return 1
    return read_model_config(resolve_model_dir(cfg.path or cfg.name))[1].hidden_size


def plan(config: ml_collections.ConfigDict, num_slices: int = 1) -> Plan:
    """Compiles config's train step for the devices present, split into `num_slices` slices, and measures it."""
    if needs_images(config):
        raise ConfigError("t2ijax.plan measures the denoiser's step without the frozen networks REPA and the perceptual "
                          "losses add; plan with repa.weight, perceptual.dino_weight and perceptual.lpips_weight at 0")
    if config.model.attention_impl == "auto":
        # The plan stands for an accelerator's step, whose 'auto' is splash, cuDNN or the einsums; the CPU's flash
        # attention would recompute the logits in the backward pass and keep no probabilities.
        config = config.copy_and_resolve_references()
        config.model.attention_impl = "xla"
    mesh = sharding.run_mesh(config, num_slices)
    _, dcn = sharding.hybrid_shape(config.mesh, config.dcn_mesh, mesh.size, num_slices)
    rules = sharding.logical_rules(config.sharding_rules)
    channels, downsample = geometry(config.autoencoder.name)
    side = config.data.resolution // downsample
    text_dim, text_len, batch = text_width(config.text_encoder), config.text_encoder.max_length, \
        config.data.global_batch_size
    model = build_model(config, channels, text_dim)
    optimizer, _ = run_optimizer(config)
    example = train_state.example_inputs(1, side, channels, text_len, text_dim)
    split = sharding.batch_sharding(mesh)
    batch_shapes = {"x0": jax.ShapeDtypeStruct((batch, side, side, channels), jnp.float32, sharding=split),
                    "text": jax.ShapeDtypeStruct((batch, text_len, text_dim), jnp.float16, sharding=split),
                    "text_mask": jax.ShapeDtypeStruct((batch, text_len), jnp.bool_, sharding=split)}
    shift = time_shift(config.diffusion, num_image_tokens(config.model, side, side))

    def lower(model_):
        state_ = train_state.abstract(model_, optimizer, example, mesh, rules, ema.enabled(config.ema))
        return state_, lower_train_step(config, model_, state_, batch_shapes, shift, mesh, rules)

    state, lowered = lower(model)
    compiled = lowered.compile()
    memory = compiled.memory_analysis()
    found = collectives.parse(compiled.as_text())
    params = collectives.parameters(state.params, mesh, stacks=_scanned_stacks(model, example))
    local_batch, itemsize = batch // sharding.batch_ways(mesh), jnp.dtype(model.dtype).itemsize
    text_tokens = text_len + 2 * getattr(model, "resolution_tokens", False)  # PRX: height and width tokens join the text
    tokens = local_batch * num_image_tokens(config.model, side, side) * model.hidden_size
    text = local_batch * text_tokens * model.hidden_size
    expected = collectives.ideal(params, mesh, tokens, text, itemsize, model.depth)
    comparison = collectives.compare(found, params, expected, mesh, batch, tokens, text, itemsize)
    slice_of = sharding.slice_of_devices(mesh, sharding.device_slices(jax.devices(), num_slices))
    over_dcn = [part for c in comparison.collectives if (part := collectives.cross_slice(c, slice_of))]
    # XLA counts a loop body once whatever its trip count, so FLOPs come from the blocks unrolled (lowered only).
    cost = lower(model.clone(scan_layers=False))[1].cost_analysis()
    return Plan(mesh=dict(mesh.shape), dcn_mesh=dict(zip(sharding.MESH_AXES, dcn)), global_batch=batch,
                parameters=sum(x.size for x in jax.tree.leaves(state.params)),
                params_bytes=_bytes_per_device(state.params), optimizer_bytes=_bytes_per_device(state.opt_state),
                ema_bytes=_bytes_per_device(state.ema_params), batch_bytes=_bytes_per_device(batch_shapes),
                argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
                alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
                flops_per_step=float(cost["flops"]),
                collectives=comparison.measured, collectives_ideal=comparison.ideal,
                collectives_explained=comparison.explained, collective_flags=comparison.flags,
                collective_notes=comparison.notes, collective_moves=_moves(found, mesh),
                communication_seconds={chip: collectives.estimate_seconds(comparison.collectives, chip)
                                       for chip in collectives.CHIPS},
                compute_seconds={chip: float(cost["flops"]) / mesh.size / spec.flops
                                 for chip, spec in collectives.CHIPS.items()},
                cross_slice=collectives.summary(over_dcn), cross_slice_moves=_moves(over_dcn, mesh),
                dcn_seconds={chip: collectives.dcn_seconds(over_dcn, chip) for chip in collectives.DCN_BANDWIDTH},
                # the dense model's count: what token routing saves is not counted as model FLOPs
                model_flops_per_image=train_step_flops(model.clone(routing="none"), 1, side, side, text_len))


def _scanned_stacks(model, example: dict) -> set[str]:
    """The top-level parameter entries nn.scan stacked: their logical axes start with "layers"."""
    inputs = [example[k] for k in ("x", "t", "text", "text_mask")]
    specs = nn.get_partition_spec(jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"])
    return {path[0].key for path, spec in jax.tree_util.tree_leaves_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) if spec and spec[0] == "layers"}


def _moves(found: list[collectives.Collective], mesh) -> list[dict]:
    """The collectives summed by kind, what they move and the mesh axes they span, largest first."""
    rows = {}
    for c in found:
        axes = "x".join(sorted(set().union(*(collectives.axes_spanned(g, mesh) for g in c.replica_groups))))
        row = rows.setdefault((c.kind, c.moves, axes), {"kind": c.kind, "moves": c.moves, "axes": axes,
                                                         "count": 0, "bytes": 0})
        row["count"] += c.count
        row["bytes"] += c.count * c.bytes
    return sorted(rows.values(), key=lambda r: -r["bytes"])


def _mib(n: float) -> str:
    return f"{n / 2**20:10.3f} MiB"


def _move_rows(moves: list[dict], kind: str, largest: int) -> list[str]:
    """The `largest` rows of `kind` in a plan's moves (collective_moves, cross_slice_moves)."""
    return [f"      {row['count']:5} x {_mib(row['bytes'] / row['count'])} over {row['axes'] or '-':12} "
            f"{row['moves'][:90]}" for row in [r for r in moves if r["kind"] == kind][:largest]]


def collectives_report(plan_: Plan, largest: int = 4) -> list[str]:
    """The table per kind, measured beside the ideal, what explains the difference, flags and estimates."""
    lines = ["collectives per step, per device    measured            ideal (FSDP + Megatron)"]
    for kind in collectives.KINDS:
        m, i = plan_.collectives[kind], plan_.collectives_ideal[kind]
        lines.append(f"  {kind:20} {m['count']:6} {_mib(m['bytes'])}   {i['count']:6} {_mib(i['bytes'])}")
        lines += _move_rows(plan_.collective_moves, kind, largest)
    for reason, kinds in plan_.collectives_explained.items():
        diff = ", ".join(f"{k} {v['count']:+d} ({v['bytes'] / 2**20:+.3f} MiB)" for k, v in kinds.items()
                         if v["count"] or v["bytes"])
        lines.append(f"  measured - ideal, {reason}: {diff}")
    lines += [f"  note: {n}" for n in plan_.collective_notes]
    flags = collections.Counter(plan_.collective_flags)
    lines += [f"  FLAG: {flag}" + (f" (x{n})" if n > 1 else "") for flag, n in list(flags.items())[:largest * 4]]
    lines += [f"  ... {len(flags) - largest * 4} more flags in --json"] if len(flags) > largest * 4 else []
    lines += [] if flags else ["  no unexpected traffic"]
    lines.append("time per step (collectives one after another, no overlap / FLOPs at peak): " + ", ".join(
        f"{chip} {plan_.communication_seconds[chip] * 1e3:.3g} / {plan_.compute_seconds[chip] * 1e3:.3g} ms"
        for chip in collectives.CHIPS))
    return lines


def cross_slice_report(plan_: Plan, largest: int = 4) -> list[str]:
    """What goes between slices: per kind, the part of each collective whose groups span them."""
    lines = ["across slices (DCN), per step, per device: among one device of each slice, on what is left once "
             "each slice has reduced or gathered over ICI"]
    for kind in collectives.KINDS:
        part = plan_.cross_slice[kind]
        lines.append(f"  {kind:20} {part['count']:6} {_mib(part['bytes'])}")
        lines += _move_rows(plan_.cross_slice_moves, kind, largest)
    lines.append("time per step over DCN (one after another, no overlap): " + ", ".join(
        f"{chip} {plan_.dcn_seconds[chip] * 1e3:.3g} ms at {bandwidth * 8 / 1e9:.0f} Gbps a chip"
        for chip, bandwidth in collectives.DCN_BANDWIDTH.items()))
    return lines


def report(plan_: Plan) -> str:
    gib = lambda n: f"{n / 2**30:8.3f} GiB" if n >= 2**30 else f"{n / 2**20:8.3f} MiB"
    state = plan_.params_bytes + plan_.optimizer_bytes + plan_.ema_bytes + 4 + 8  # + step (int32) and rng (2 x uint32)
    devices, slices = math.prod(plan_.mesh.values()), math.prod(plan_.dcn_mesh.values())
    across = f" in {slices} slices, across them {plan_.dcn_mesh}" if slices > 1 else ""
    lines = [
        f"mesh {plan_.mesh} ({devices} devices{across}), global batch {plan_.global_batch}, "
        f"{plan_.parameters / 1e6:.1f}M parameters",
        "per device:",
        f"  parameters        {gib(plan_.params_bytes)}",
        f"  optimizer state   {gib(plan_.optimizer_bytes)}",
        f"  EMA               {gib(plan_.ema_bytes)}",
        f"  batch             {gib(plan_.batch_bytes)}",
        f"  arguments         {gib(plan_.argument_bytes)}   (compiled; state + batch = "
        f"{gib(state + plan_.batch_bytes)})",
        f"  outputs           {gib(plan_.output_bytes)}   ({gib(plan_.alias_bytes)} of them over the donated state)",
        f"  temporaries       {gib(plan_.temp_bytes)}   (activations, gradients, workspace)",
        f"  peak              {gib(plan_.peak_bytes)}   (arguments + outputs - donated + temporaries)",
        f"FLOPs per step      {plan_.flops_per_step:.3e}   (XLA's count, recomputation included; "
        f"{plan_.flops_per_step / devices:.3e} per device)",
        f"FLOPs per image     {plan_.flops_per_image:.3e}   (model: {plan_.model_flops_per_image:.3e}, the matmuls "
        "and attention forward and backward)",
        "fits: " + ", ".join(f"{name} ({size / 2**30:.1f} GiB) {'yes' if plan_.peak_bytes <= size else 'no'}"
                             for name, size in ACCELERATORS.items()),
        *collectives_report(plan_),
        *(cross_slice_report(plan_) if slices > 1 else []),
    ]
    return "\n".join(lines)
