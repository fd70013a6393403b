"""The collectives of a compiled (SPMD-partitioned) step, read from its optimized HLO text
(`compiled.as_text()`), the ideal traffic for the mesh beside them (`ideal`, `compare`), and the time
they take at a chip's interconnect bandwidth (`estimate_seconds`); docs/scaling.md.

Each operand of a collective is one `Collective` (XLA's combiner merges many into one tuple-shaped
op; counting operands keeps the count independent of how it combined them). A collective inside a
while loop (the scanned blocks) counts once per trip: `count` is the loop's known trip count.
"""
import dataclasses
import math
import re
from collections.abc import Iterable

import jax
import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
               "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str                        # one of KINDS
    bytes: int                       # per device: the whole buffer (an all-gather's result, a reduce-scatter's
                                     # input, the operand of the others)
    replica_groups: list[list[int]]  # device ids that take part together (source, target pairs for a permute)
    op_name: str                     # jax's op_name metadata: the parameter or activation it moves
    dtype: str
    shape: tuple[int, ...]
    count: int = 1                   # times per step (trip count of the loops around it)

    @property
    def group_size(self) -> int:
        return len(self.replica_groups[0]) if self.replica_groups else 1

    @property
    def backward(self) -> bool:
        return "transpose(" in self.op_name

    @property
    def moves(self) -> str:
        """The op_name without jit's and the scan's wrappers: 'forward PRXBlock_0/attention/img_qkv/dot_general'."""
        name = self.op_name.removeprefix("jit(train_step)/")
        name = re.sub(r"(transpose\()?jvp\(\w+\)\)?/", "", name)
        wrappers = r"\w+\.\w+|while|body|closed_call|checkpoint|remat|rematted_computation"  # Python, scan, remat
        name = "/".join(part for part in name.split("/") if not re.fullmatch(wrappers, part))
        return ("backward " if self.backward else "forward " if "jvp(" in self.op_name else "") + name


# `%name = TYPE kind(operands), attributes` where TYPE may be a tuple.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\((.*?)\)(, .*)?$")
_ARRAY = re.compile(r"\b(pred|[sufc]\d+|bf16|f8\w+)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{$")


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(type_text)]


def _attribute(attributes: str, name: str) -> str | None:
    """The value of `name=...` up to its balanced end (braces, brackets, parentheses)."""
    start = attributes.find(f" {name}=")
    if start < 0:
        return None
    i = start + len(name) + 2
    depth, begin = 0, i
    while i < len(attributes):
        c = attributes[i]
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        elif c == "," and depth == 0:
            break
        i += 1
    return attributes[begin:i]


def _iota(text: str) -> np.ndarray:
    """'[4,2]<=[2,2,2]T(2,1,0)' (or '[4,2]T(1,0)', a reshape and transpose of iota) -> the device array."""
    m = re.fullmatch(r"\[([\d,]+)\](?:<=\[([\d,]+)\])?(?:T\(([\d,]+)\))?", text.strip())
    if not m:
        raise ValueError(f"unrecognised device list {text!r}")
    dims = [int(d) for d in m.group(1).split(",")]
    reshape = [int(d) for d in (m.group(2) or m.group(1)).split(",")]
    ids = np.arange(math.prod(reshape)).reshape(reshape)
    if m.group(3):
        ids = ids.transpose([int(d) for d in m.group(3).split(",")])
    return ids.reshape(dims)


def _mesh_groups(text: str) -> list[list[int]]:
    """"mesh['a'=4,'b'=2], device_ids=([4,2]T(1,0)) {'a'}" -> the groups along the named (sub-)axes."""
    m = re.fullmatch(r"mesh\[(.*?)\](?:, device_ids=\((.*?)\))? \{(.*)\}", text.strip())
    if not m:
        raise ValueError(f"unrecognised replica groups {text!r}")
    axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
    names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
    devices = _iota(m.group(2)) if m.group(2) else np.arange(math.prod(sizes))
    # Each grouped axis ref is a whole axis 'a' or a sub-axis 'a':(pre)size: split every mesh axis into
    # factors so that each ref is one factor, then gather the grouped factors last.
    refs = [(name, int(pre) if pre else None, int(size) if size else None)
            for name, pre, size in re.findall(r"'([^']+)'(?::\((\d+)\)(\d+))?", m.group(3))]
    factors, grouped = [], {}
    for name, size in zip(names, sizes):
        cuts = sorted((pre, sub) for ref, pre, sub in refs if ref == name and pre)
        if any(ref == name and not pre for ref, pre, _ in refs):
            grouped[(name, None)] = len(factors)
            factors.append(size)
            continue
        done = 1
        for pre, sub in cuts:
            if pre > done:
                factors.append(pre // done)
            grouped[(name, pre)] = len(factors)
            factors.append(sub)
            done = pre * sub
        if done < size:
            factors.append(size // done)
    order = [grouped[(name, pre)] for name, pre, _ in refs]
    rest = [i for i in range(len(factors)) if i not in order]
    group_size = math.prod(factors[i] for i in order)
    return devices.reshape(factors).transpose(rest + order).reshape(-1, group_size).tolist()


def replica_groups(text: str) -> list[list[int]]:
    """Any of XLA's three spellings: '{{0,1},{2,3}}', iota '[2,2]<=[4]', mesh axes "mesh['x'=2] {'x'}"."""
    text = text.strip()
    if text.startswith("mesh["):
        return _mesh_groups(text)
    if text.startswith("["):
        return _iota(text).tolist()
    return [[int(d) for d in g.split(",") if d] for g in re.findall(r"\{([\d,]*)\}", text)]


def _operand_names(instruction: re.Match) -> list[str]:
    return re.findall(r"%([\w.-]+)", instruction.group(4))


def _trip_counts(text: str) -> dict[str, int]:
    """How many times each computation runs per step: while bodies multiply by their known trip count."""
    calls: dict[str, list[tuple[str, int]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if (m := _COMPUTATION.match(line)) and not line.startswith(" "):
            current = m.group(1)
            entry = current if line.startswith("ENTRY") else entry
            continue
        if current is None or "=%" not in line:
            continue
        trips = 1
        if " while(" in line:
            n = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
            if not n:
                raise ValueError(f"a while loop without a known trip count in computation {current}")
            trips = int(n.group(1))
        branches = re.search(r"branch_computations=\{([^}]*)\}", line)
        callees = re.findall(r"(?:body|to_apply|calls|true_computation|false_computation)=%([\w.-]+)", line)
        for callee in callees + (re.findall(r"%([\w.-]+)", branches.group(1)) if branches else []):
            calls.setdefault(current, []).append((callee, trips))
    counts = {entry: 1}
    pending = [entry]
    while pending:
        caller = pending.pop()
        for callee, trips in calls.get(caller, ()):
            if callee not in counts:
                counts[callee] = counts[caller] * trips
                pending.append(callee)
    return counts


def parse(text: str) -> list[Collective]:
    """Every collective of an optimized HLO module, one per operand, with its count per step."""
    counts = _trip_counts(text)
    instructions, users, owner = {}, {}, {}
    current = None
    for line in text.splitlines():
        if (m := _COMPUTATION.match(line)) and not line.startswith(" "):
            current = m.group(1)
        elif m := _INSTRUCTION.match(line):
            instructions[m.group(1)] = m
            owner[m.group(1)] = current
            if m.group(3) == "get-tuple-element":
                users.setdefault(m.group(4).lstrip("%"), {})[int(_attribute(m.group(5), "index"))] = m
    found = []
    for name, m in instructions.items():
        kind = m.group(3).removesuffix("-done")
        if kind not in KINDS or m.group(3).endswith("-start"):
            continue
        start = instructions[_operand_names(m)[-1]] if m.group(3).endswith("-done") else m
        attributes = start.group(5) or ""
        op_name = re.search(r'op_name="([^"]*)"', attributes)
        mesh = re.search(r" replica_groups=(mesh\[.*?\](?:, device_ids=\(.*?\))? \{.*?\})", attributes)
        groups = (mesh.group(1) if mesh else _attribute(attributes, "replica_groups")
                  or _attribute(attributes, "source_target_pairs") or "{}")
        operands = _arrays(m.group(2))
        if kind == "reduce-scatter":  # the result is one shard; the buffer is the input
            operands = _arrays(" ".join(instructions[o].group(2) for o in _operand_names(start)))
        parts = users.get(name, {})
        for i, (dtype, shape) in enumerate(operands):
            part = parts.get(i)
            name_here = re.search(r'op_name="([^"]*)"', part.group(5) or "") if part else None
            found.append(Collective(
                kind=kind, bytes=math.prod(shape) * DTYPE_BYTES[dtype], replica_groups=replica_groups(groups),
                op_name=(name_here or op_name).group(1) if (name_here or op_name) else "", dtype=dtype,
                shape=shape, count=counts.get(owner[name], 1)))
    return found


def summary(collectives: Iterable[Collective]) -> dict[str, dict[str, int]]:
    """{kind: {"count": per step, "bytes": per device per step}} for every kind, zeros included."""
    table = {kind: {"count": 0, "bytes": 0} for kind in KINDS}
    for c in collectives:
        table[c.kind]["count"] += c.count
        table[c.kind]["bytes"] += c.count * c.bytes
    return table


# The ideal traffic of a mesh, from the state's shardings: FSDP gathers each layer's parameters once in the
# forward and once in the backward pass and reduce-scatters its gradients once; a parameter the batch axes do
# not split has its gradient all-reduced; tensor parallelism is Megatron's pattern, an all-reduce of the
# tokens after each row-parallel layer (attention out, MLP down) in the forward pass and of the input's
# gradient of each column-parallel group in the backward pass (image tokens twice, PRX's text tokens once).
@dataclasses.dataclass(frozen=True)
class Expected:
    kind: str
    bytes: int       # per device, the whole buffer as in Collective
    count: int       # per step
    moves: str       # 'gather attention/img_qkv/kernel', 'tensor-parallel tokens', ...
    module: str = ""


@dataclasses.dataclass(frozen=True)
class Param:
    path: str        # 'attention/img_qkv/kernel' (a block's, without the blocks prefix)
    layers: int      # copies stacked on a leading axis (the scanned blocks), else 1
    bytes: int       # one layer's, gathered over the batch axes: what FSDP moves
    batch_ways: int  # how many ways the batch axes (data, fsdp) split it
    tensor_ways: int  # how many ways the other axes split it
    itemsize: int

    @property
    def module(self) -> str:
        return self.path.rpartition("/")[0]


def parameters(params, mesh, batch_axes=("data", "fsdp"), stacks=("blocks",)) -> list[Param]:
    """Each parameter of a tree of ShapeDtypeStructs with NamedShardings (planning's abstract state); `stacks`
    name the top-level entries that nn.scan stacked over a leading layers axis."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        names = [n for n in names if n != "params"]
        stacked = names[0] in stacks
        names = names[1:] if stacked or re.fullmatch(r"blocks_\d+", names[0]) else names
        ways = {"batch": 1, "tensor": 1}
        for axes in leaf.sharding.spec:
            for a in (axes,) if isinstance(axes, str) else axes or ():
                ways["batch" if a in batch_axes else "tensor"] *= mesh.shape[a]
        layers = leaf.shape[0] if stacked else 1
        out.append(Param("/".join(names), layers, leaf.size // layers // ways["tensor"] * leaf.dtype.itemsize,
                         ways["batch"], ways["tensor"], leaf.dtype.itemsize))
    return out


def ideal(params: list[Param], mesh, tokens: int, text: int, itemsize: int, blocks: int) -> list[Expected]:
    """The traffic of `params` under FSDP over the batch axes and Megatron tensor parallelism over the
    rest; tokens and text are the elements of one device's image and text tokens entering a block, in
    the compute dtype's itemsize."""
    batch_ways = math.prod(size for axis, size in mesh.shape.items() if axis in ("data", "fsdp"))
    tensor = math.prod(size for axis, size in mesh.shape.items() if axis not in ("data", "fsdp"))
    out = []
    for p in params:
        if p.batch_ways > 1:
            out += [Expected("all-gather", p.bytes, 2 * p.layers, f"gather {p.path}", p.module),
                    Expected("reduce-scatter", p.bytes, p.layers, f"gradient {p.path}", p.module)]
        elif batch_ways > 1:
            out.append(Expected("all-reduce", p.bytes, p.layers, f"gradient {p.path}", p.module))
        if p.batch_ways > 1 and batch_ways > p.batch_ways:  # fsdp within data parallelism: the shards' sum
            out.append(Expected("all-reduce", p.bytes // p.batch_ways, p.layers, f"gradient {p.path} across data",
                                p.module))
    if tensor > 1:
        out += [Expected("all-reduce", tokens * itemsize, 4 * blocks, "tensor-parallel image tokens"),
                Expected("all-reduce", text * itemsize, blocks, "tensor-parallel text tokens (backward)")]
    # Stacks of one block class (U-ViT's in- and out-blocks) hold parameters of one path: their ops are told apart
    # by nothing in their op_names, so their collectives are expected together.
    merged: dict[tuple, Expected] = {}
    for e in out:
        key = (e.kind, e.moves, e.bytes)
        merged[key] = dataclasses.replace(e, count=merged[key].count + e.count) if key in merged else e
    return list(merged.values())


# Why the measured traffic differs from the ideal, where the difference is known and not a fault.
SCALARS = "scalars: loss, metrics, gradient norm, finiteness flags"
VECTOR = ("layers on the timestep vector (adaLN modulations, time embedding): XLA moves [batch, features] products "
          "and their gradients in place of the kernel's gathers and gradient, which are larger")
REUSED = "parameters outside the scanned blocks: the forward pass's gathered copy serves the backward pass too"
TENSOR_SUM = "parameters whole over tensor acting on tensor-split heads (QK-norm scales): gradients summed over tensor"
MLP_BRANCHES = ("the MLP input's gradient all-reduced per branch (gate, up), then summed; summing first "
                "(XLA's AllReduceReassociate) would save one all-reduce of the tokens per block")
WIDENED = ("XLA:CPU all-reduces the tokens in float32 where the compute dtype is narrower (its reduction is "
           "promoted: to_apply=..._promoted); TPU and GPU reduce the compute dtype")
MERGED = "gradients all-reduced over data and fsdp at once: the reduce-scatter and the data all-reduce in one"
RECOMPUTED = "remat recomputes the forward pass in the backward pass, its tensor-parallel all-reduces with it"
UNEXPLAINED = "unexplained"
CPU_REDUCE_SCATTER = "XLA:CPU all-reduces a gradient and slices it; TPU and GPU compilers make it a reduce-scatter"


@dataclasses.dataclass
class Comparison:
    measured: dict[str, dict[str, int]]  # summary per kind, a CPU all-reduce + slice counted as a reduce-scatter
    ideal: dict[str, dict[str, int]]
    explained: dict[str, dict[str, dict[str, int]]]  # reason -> kind -> {count, bytes}; measured = ideal + these
    flags: list[str]                                # unexpected traffic
    notes: list[str]
    collectives: list[Collective]  # as TPU and GPU compile them: reduce-scatters, tokens reduced in the compute dtype


def _module(op_name: str, modules: set[str]) -> str:
    """The longest tail of op_name's path (its last part, the op, dropped) that names a parameter's module;
    method scopes ('attention._qkv') are not modules."""
    parts = [part for part in op_name.split("/")[:-1] if not re.fullmatch(r"\w+\.\w+", part)]
    return next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in modules), "")


def axes_spanned(group: list[int], mesh) -> set[str]:
    """The mesh axes along which a group's (logical) device ids differ."""
    coords = np.array(np.unravel_index(group, tuple(mesh.shape.values())))
    return {axis for axis, row in zip(mesh.shape, coords) if len(set(row)) > 1}


def compare(found: list[Collective], params: list[Param], expected: list[Expected], mesh, batch: int,
            tokens: int, text: int, itemsize: int) -> Comparison:
    """Attributes each measured collective to an ideal one (a parameter's gather or gradient, a Megatron
    all-reduce) or to a known reason, so that measured = ideal + explained for every kind, in counts and
    bytes. Flagged: what no reason covers, a tensor-sharded kernel gathered over tensor, and a collective
    outside the model's forward and backward passes (the optimizer update) bigger than a scalar."""
    by_module: dict[str, list[Param]] = {}
    for p in params:
        by_module.setdefault(p.module, []).append(p)
    data, fsdp = mesh.shape.get("data", 1), mesh.shape.get("fsdp", 1)
    batch_rows = {batch, batch // data, batch // fsdp, batch // (data * fsdp)}  # a [batch, ...] vector, split or not
    measured, explained, flags = summary(()), {}, []
    matched: dict[str, list[int]] = {}      # ideal key -> [count, bytes] measured
    branches = recomputed = 0               # backward token all-reduces at gate_proj/up_proj; at to_out/down_proj
    vector_modules, merged, cpu_reduce_scatters, retyped = set(), set(), 0, []

    def explain(reason: str, kind: str, count: int, size: int):
        entry = explained.setdefault(reason, summary(()))[kind]
        entry["count"] += count
        entry["bytes"] += size

    for c in found:
        module = _module(c.op_name, set(by_module))
        elements = math.prod(c.shape)
        spanned = set().union(*(axes_spanned(g, mesh) for g in c.replica_groups))
        owned = by_module.get(module, [])
        per_layer = lambda p: p.bytes // p.itemsize
        owners = [p for p in owned if per_layer(p) == elements]
        shard_owners = [p for p in owned if p.batch_ways > 1 and per_layer(p) // p.batch_ways == elements]
        kind, key, reason, ideal_bytes, accelerator_bytes = c.kind, None, None, c.bytes, c.bytes
        if c.kind == "all-gather" and "tensor" in spanned and any(
                p.tensor_ways > 1 and elements in (per_layer(p) * p.tensor_ways, per_layer(p) * p.tensor_ways //
                                                   p.batch_ways) for p in owned):
            flags.append(f"a tensor-sharded kernel gathered over tensor: {c.dtype}{list(c.shape)}, {c.moves}")
        if owners and c.kind == "all-gather" and spanned <= {"data", "fsdp"}:
            key = f"gather {owners[0].path}"
        elif shard_owners and c.kind == "all-reduce" and c.backward and spanned == {"data"}:
            key = f"gradient {shard_owners[0].path} across data"
        elif owners and c.kind in ("all-reduce", "reduce-scatter") and c.backward:
            p = owners[0]
            if spanned == {"tensor"} and p.tensor_ways == 1:
                reason = TENSOR_SUM
            elif c.kind == "all-reduce" and p.batch_ways > 1 and "fsdp" in spanned:
                kind, key, cpu_reduce_scatters = "reduce-scatter", f"gradient {p.path}", cpu_reduce_scatters + c.count
                if "data" in spanned:
                    merged.add(f"{key} across data")
            else:
                key = f"gradient {p.path}" + (" across data" if p.batch_ways > 1 else "")
        elif c.kind == "all-reduce" and spanned == {"tensor"} and elements in (tokens, text):
            key = "tensor-parallel image tokens" if elements == tokens else "tensor-parallel text tokens (backward)"
            ideal_bytes = accelerator_bytes = elements * itemsize
            if c.bytes != ideal_bytes:
                explain(WIDENED, kind, 0, c.count * (c.bytes - ideal_bytes))
            layer = module.rpartition("/")[2]
            branches += c.count if c.backward and layer in ("gate_proj", "up_proj") else 0
            recomputed += c.count if c.backward and layer in ("to_out", "down_proj") else 0
        measured[kind]["count"] += c.count
        measured[kind]["bytes"] += c.count * c.bytes
        retyped.append(dataclasses.replace(c, kind=kind, bytes=accelerator_bytes))
        if key is not None:
            entry = matched.setdefault(key, [0, 0])
            entry[0] += c.count
            entry[1] += c.count * ideal_bytes
            continue
        if reason is None and elements <= 1:
            reason = SCALARS
        elif reason is None and module and len(c.shape) == 2 and c.shape[0] in batch_rows:
            reason = VECTOR
            vector_modules.add(module)
        elif reason is None:
            reason = UNEXPLAINED
            flags.append(f"{c.kind} of {c.dtype}{list(c.shape)} over {sorted(spanned)}, {c.count} per step: {c.moves}")
        explain(reason, kind, c.count, c.count * c.bytes)
        if elements > 1 and "jvp(" not in c.op_name and "transpose(" not in c.op_name:
            flags.append(f"{c.kind} of {c.dtype}{list(c.shape)} outside the model (optimizer update?): {c.op_name}")
    ideal_table = summary(())
    layers = {f"{verb} {p.path}": p.layers for p in params for verb in ("gather", "gradient")}
    for e in expected:
        ideal_table[e.kind]["count"] += e.count
        ideal_table[e.kind]["bytes"] += e.count * e.bytes
        count, size = matched.pop(e.moves, (0, 0))
        extra = count - e.count
        if not extra:
            continue
        if e.module in vector_modules:
            reason = VECTOR
        elif e.moves.startswith("gather") and layers[e.moves] == 1 and count == e.count // 2:
            reason = REUSED
        elif e.moves in merged and count == 0:
            reason = MERGED
        elif e.moves == "tensor-parallel image tokens" and extra == branches // 2 + recomputed:
            if recomputed:
                explain(RECOMPUTED, e.kind, recomputed, size * recomputed // count)
            extra, size, reason = branches // 2, size - size * recomputed // count, MLP_BRANCHES
        else:
            reason = UNEXPLAINED
            flags.append(f"{e.moves}: {count} {e.kind}s per step where the ideal has {e.count}")
        explain(reason, e.kind, extra, size - e.count * e.bytes)
    for key, (count, size) in matched.items():  # matched to a parameter, but no ideal collective of that kind
        flags.append(f"{key}: {count} collectives per step ({size} bytes) where the ideal has none")
        explain(UNEXPLAINED, "all-reduce" if key.startswith("gradient") else "all-gather", count, size)
    notes = [f"{cpu_reduce_scatters} gradient all-reduces counted as reduce-scatters: {CPU_REDUCE_SCATTER}"] \
        if cpu_reduce_scatters else []
    return Comparison(measured, ideal_table, explained, flags, notes, retyped)


@dataclasses.dataclass(frozen=True)
class Chip:
    bandwidth: float  # bytes/s one chip sends and receives in a ring collective along one mesh axis
    flops: float      # peak dense bf16 FLOPs/s


# TPU: ICI bandwidth per link, both directions (a ring along one torus axis uses both), from "How to Scale
# Your Model" part 2 (https://jax-ml.github.io/scaling-book/tpus/, the per-chip spec table: v5e 9e10 B/s,
# v5p and v6e 1.8e11 B/s); peak bf16 FLOPs/s from Google Cloud's pages (cloud.google.com/tpu/docs/v5e:
# 197 TFLOPs, /v5p: 459 TFLOPs, /v6e: 918 TFLOPs). H100 SXM: NVLink 4 is 900 GB/s per GPU in both
# directions together, 450 GB/s each way (https://www.nvidia.com/en-us/data-center/h100/), and 989 dense
# bf16 TFLOPs/s (the same page's 1,979 is with 2:4 sparsity).
CHIPS = {"v5e": Chip(9e10, 197e12), "v5p": Chip(1.8e11, 459e12), "v6e": Chip(1.8e11, 918e12),
         "H100": Chip(4.5e11, 989e12)}

# Bytes a device sends per byte of the whole buffer in a ring of n: an all-gather or reduce-scatter passes
# (n - 1)/n of it, an all-reduce (a reduce-scatter then an all-gather) twice that, a permute all of it.
_RING = {"all-gather": lambda n: (n - 1) / n, "reduce-scatter": lambda n: (n - 1) / n,
         "all-reduce": lambda n: 2 * (n - 1) / n, "all-to-all": lambda n: (n - 1) / n,
         "collective-permute": lambda n: 1.0}


def estimate_seconds(collectives: Iterable[Collective], chip: str) -> float:
    """Time per step the collectives take at `chip`'s bandwidth, one after another, none overlapped with
    compute: bandwidth-bound ring algorithms, no latency term (a lower bound for small messages)."""
    bandwidth = CHIPS[chip].bandwidth
    return sum(c.count * c.bytes * _RING[c.kind](c.group_size) / bandwidth for c in collectives)


# Data-center network (DCN) bandwidth per chip between the slices of a multislice TPU job, bytes/s each
# way, from Google Cloud's TPU pages: a v5e host has 2 x 100 Gbps NICs for its 8 chips, 25 Gbps a chip
# (6.4 Tbps per 256-chip pod; https://cloud.google.com/tpu/docs/v5e); v5p, 50 Gbps a chip
# (https://cloud.google.com/tpu/docs/v5p). Tens of times below the ICI figures in CHIPS.
DCN_BANDWIDTH = {"v5e": 25e9 / 8, "v5p": 50e9 / 8}


def cross_slice(c: Collective, slice_of: np.ndarray) -> Collective | None:
    """The part of `c` that goes over DCN, or None where each of its groups stays in one slice.

    `slice_of[i]` is the slice of logical device i (the i-th of the mesh's flattened devices, which is
    what replica groups count). Each group's members within a slice reduce or gather over ICI first, so
    the cross-slice part is the same kind of collective among one member per slice, on 1/(members per
    slice) of the buffer; an all-to-all or a permute sends its cross-slice share whole.
    """
    if c.kind == "collective-permute":
        pairs = [pair for pair in c.replica_groups if len(set(slice_of[pair])) > 1]
        return dataclasses.replace(c, replica_groups=pairs) if pairs else None
    groups, per_slice = [], 1
    for group in c.replica_groups:
        members = {}
        for device in group:
            members.setdefault(int(slice_of[device]), []).append(device)
        if len(members) > 1:
            per_slice = len(group) // len(members)
            groups += [list(column) for column in zip(*members.values())]  # one member of each slice
    if not groups:
        return None
    whole = c.kind == "all-to-all"
    return dataclasses.replace(c, replica_groups=groups, bytes=c.bytes if whole else c.bytes // per_slice)


def dcn_seconds(crossing: Iterable[Collective], chip: str) -> float:
    """Time per step the cross-slice parts (cross_slice) take at `chip`'s DCN bandwidth, as estimate_seconds."""
    return sum(c.count * c.bytes * _RING[c.kind](c.group_size) for c in crossing) / DCN_BANDWIDTH[chip]
