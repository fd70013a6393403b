"""Where the bench's train step spends its time, by the model code each XLA op came from.

  python -m t2ijax.benchmarks.op_profile --config=configs/bench_cpu.py [--steps=3] [--top=30]

Traces `steps` compiled train steps on config.bench's random inputs (jax.profiler, after two untimed
ones), sums every XLA op's duration per the source op its optimized HLO names in metadata (`op_name`,
with layer indices folded, so the six blocks' up_proj add up) and prints the largest per step. The op times
of ops XLA runs concurrently add up to more than the wall time, which is printed beside them.
"""
import collections
import glob
import gzip
import json
import re
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from t2ijax import host_memory
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

FLAGS = flags.FLAGS
_OP = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name=\"([^\"]*)\"")
_TRANSFORMS = ("jvp(", "transpose(", "vmap(", "checkpoint", "remat", "pjit")


def source_of(op_name: str) -> str:
    """The module path and op of an HLO op_name, without jax's transformations and Flax's method scopes, layer
    indices folded: jit(step)/jvp(PRX)/PRX._blocks/PRXBlock_3/attention/img_qkv/dot_general becomes
    PRXBlock_N/attention/img_qkv/dot_general."""
    parts = [p for p in op_name.split("/") if not p.startswith(("jit(", *_TRANSFORMS)) and "." not in p]
    return "/".join(re.sub(r"_\d+$", "_N", p) for p in parts)


def op_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its source (source_of its metadata's op_name)."""
    return {m.group(1): source_of(m.group(2)) for line in hlo_text.splitlines() if (m := _OP.match(line))}


def op_milliseconds(trace_dir: str, sources: dict[str, str], steps: int) -> collections.Counter:
    """Milliseconds per step of each source, from the trace's perfetto events."""
    [path] = glob.glob(f"{trace_dir}/**/*perfetto_trace.json.gz", recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in sources:
            totals[sources[event["name"]]] += event["dur"] / 1e3 / steps
    return totals


def main(argv):
    quiet_libraries()
    host_memory.tune_for_cpu()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    import jax

    from t2ijax.benchmarks.synthetic import check, synthetic

    config = loaded_config(FLAGS.config)
    check(config)
    s = synthetic(config)
    compiled = s.lowered_train_step().compile()
    state = s.state

    def step():
        nonlocal state
        state, _ = compiled(state, s.batch, None)
        jax.block_until_ready(state)

    for _ in range(2):  # compiled, memory touched
        step()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                step()
            wall_ms = (time.perf_counter() - start) * 1e3 / FLAGS.steps
        totals = op_milliseconds(trace_dir, op_sources(compiled.as_text()), FLAGS.steps)
    total = sum(totals.values())
    print(f"wall {wall_ms:.0f} ms a step; op time {total:.0f} ms a step")
    for source, ms in totals.most_common(FLAGS.top):
        print(f"{ms:8.1f} ms {100 * ms / total:5.1f} %  {source}")


if __name__ == "__main__":  # flags defined here only: importing the module's functions defines none
    flags.DEFINE_integer("steps", 3, "Traced train steps.")
    flags.DEFINE_integer("top", 30, "Source ops shown, the largest first.")
    config_flags.DEFINE_config_file("config", "configs/bench_cpu.py", "Config file (see configs/).", lock_config=True)
    app.run(main, flags_parser=parse_flags)
