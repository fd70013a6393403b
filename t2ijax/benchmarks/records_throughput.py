"""The loader's records/s at PRX-small's record shapes, in worker processes and in threads.

  python -m t2ijax.benchmarks.records_throughput --out=FILE.json

Writes --records synthetic training records of PRX-small's shapes (a 32x32x16 latent, 256 x 2304 text
tokens, all valid; bfloat16) with records.write_shard, then streams global batches of --batch_size from
them through pipeline.StepBatches.stream as training does: with --workers worker processes, and with
--threads threads. Records/s is what this one process receives. Beside it, the CPU cost of
each part of a batch: the ArrayRecord read and decode, the text padding, the latents' float32 cast.
The bar (issue 29): >= 500 records/s per process with 2 workers.
"""
import datetime
import os
import sys
import tempfile
import time

import ml_collections
import numpy as np
from absl import app, flags

from t2ijax.benchmarks.timing import under_load, write_json

FLAGS = flags.FLAGS

LATENT = (32, 32, 16)  # PRX-small at 256 px: the Flux.2 autoencoder's 16 channels at 1/8 the side
TEXT = (256, 2304)  # T5Gemma's 256 tokens of 2304
SET = "train/256/256x256"
BAR = 500  # issue 29: records/s per process with 2 workers


def write_records(directory: str, count: int, per_shard: int, seed: int = 0) -> dict:
    """`count` training records of PRX-small's shapes in shards of `per_shard`, and the manifest that
    names them (the fields pipeline.StepBatches reads)."""
    import ml_dtypes

    from t2ijax.data import records

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(directory, SET), exist_ok=True)
    shards = []
    for first in range(0, count, per_shard):
        name = records.shard_name(len(shards))
        examples = [{"key": f"{i:08d}",
                     "text": rng.standard_normal(TEXT, np.float32).astype(ml_dtypes.bfloat16),
                     "text_lengths": np.array([TEXT[0]], np.int32), "caption": np.zeros((1, 1), np.int32),
                     "caption_weights": np.ones(1, np.float32),
                     "latent": rng.standard_normal((1, *LATENT), np.float32).astype(ml_dtypes.bfloat16)}
                    for i in range(first, min(count, first + per_shard))]
        records.write_shard(os.path.join(directory, SET, name), examples)
        shards.append([name, len(examples)])
    return {"sets": {SET: {"count": count, "shards": shards}}, "max_length": TEXT[0], "text_dim": TEXT[1]}


def step_batches(directory: str, manifest: dict, batch_size: int):
    from t2ijax.data import pipeline

    sets = pipeline.open_sets(directory, manifest, [SET], skip_bad=False)
    return pipeline.StepBatches(sets, batch_size, 0, manifest["max_length"], manifest["text_dim"], latents=True,
                                images=False)


def streamed(batches, count: int, workers: int, threads: int, prefetch: int) -> float:
    """Records/s this process receives from batches.stream, timed over `count` batches after the first."""
    data = ml_collections.ConfigDict({"read_workers": workers, "read_threads": threads, "prefetch": prefetch})
    stream = iter(batches.stream(0, count + 1, data))
    next(stream)
    start = time.perf_counter()
    for _ in range(count):
        batch = next(stream)
    seconds = time.perf_counter() - start
    stream.close()  # its workers or threads stop before the next measurement
    assert batch["text"].shape == (batches.order.global_batch_size, *TEXT), batch["text"].shape
    return count * batches.order.global_batch_size / seconds


def parts(batches, count: int) -> dict:
    """CPU milliseconds per batch of each part of StepBatches' work, done in this process alone (CPU time,
    not wall: other processes on the machine do not change it; ArrayRecord's own reader threads count)."""
    from t2ijax.data import pipeline
    from t2ijax.data.order import choose

    timings = {"read_decode": 0.0, "pad_text": 0.0, "latent_float32": 0.0, "whole_batch": 0.0}
    for step in range(1, count + 1):
        group, indices, draws = batches.order.draw(step)
        start = time.process_time()
        examples = batches.sets[group].read(indices)
        read = time.process_time()
        view, field = choose(1, np.stack([e["caption_weights"] for e in examples]), draws)
        tokens = [pipeline.caption_tokens(e, int(e["caption"][v, f])) for e, v, f in zip(examples, view, field)]
        pipeline.pad_text(tokens, batches.max_length, batches.text_dim, examples[0]["text"].dtype)
        padded = time.process_time()
        np.stack([e["latent"][v] for e, v in zip(examples, view)]).astype(np.float32)
        cast = time.process_time()
        batches(step)
        whole = time.process_time()
        for name, seconds in zip(timings, (read - start, padded - read, cast - padded, whole - cast)):
            timings[name] += 1000 * seconds / count
    return timings


def benchmark(count: int, batch_size: int, timed: int, workers: int, threads: int, prefetch: int,
              per_shard: int) -> dict:
    from t2ijax.benchmarks.timing import machine

    with tempfile.TemporaryDirectory(prefix="records_throughput_") as directory:
        start = time.perf_counter()
        manifest = write_records(directory, count, per_shard)
        write_seconds = time.perf_counter() - start
        batches = step_batches(directory, manifest, batch_size)
        record_bytes = sum(os.path.getsize(os.path.join(directory, SET, name)) for name, _ in
                           manifest["sets"][SET]["shards"]) / count
        result = {"records_per_s_workers": streamed(batches, timed, workers, threads, prefetch),
                  "records_per_s_threads": streamed(batches, timed, 0, threads, prefetch),
                  "cpu_ms_per_batch": parts(batches, min(timed, 10))}
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "machine": machine(), "records": count, "batch_size": batch_size, "timed_batches": timed,
            "workers": workers, "threads": threads, "prefetch": prefetch, "latent_shape": list(LATENT),
            "text_shape": list(TEXT), "bytes_per_record": record_bytes, "write_seconds": write_seconds,
            **result, "bar_records_per_s": BAR, "meets_bar": result["records_per_s_workers"] >= BAR}


def define_flags() -> None:
    """The command's flags (defined on running it: both benchmarks' modules import together)."""
    flags.DEFINE_integer("records", 2000, "Synthetic records written and streamed.")
    flags.DEFINE_integer("batch_size", 64, "Records per batch.")
    flags.DEFINE_integer("batches", 40, "Timed batches per loader (after one untimed: worker start-up).")
    flags.DEFINE_integer("workers", 2, "Worker processes (config.data.read_workers).")
    flags.DEFINE_integer("threads", 2, "Threads, for comparison (config.data.read_threads).")
    flags.DEFINE_integer("prefetch", 4, "Batches read ahead (config.data.prefetch).")
    flags.DEFINE_integer("records_per_shard", 1024, "Records per shard (config.data.records_per_shard).")
    flags.DEFINE_string("out", "", "Also write the result to this JSON file.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if min(FLAGS.records, FLAGS.batch_size, FLAGS.batches, FLAGS.workers, FLAGS.threads, FLAGS.prefetch) < 1 \
            or FLAGS.records < FLAGS.batch_size:
        sys.exit("error: --records, --batch_size, --batches, --workers, --threads and --prefetch must be positive, "
                 "and --records at least one --batch_size")
    result = under_load(lambda: benchmark(FLAGS.records, FLAGS.batch_size, FLAGS.batches, FLAGS.workers,
                                          FLAGS.threads, FLAGS.prefetch, FLAGS.records_per_shard))
    print(f"{result['workers']} workers: {result['records_per_s_workers']:.0f} records/s; {result['threads']} threads: "
          f"{result['records_per_s_threads']:.0f} records/s (bar {BAR} with workers: "
          f"{'meets' if result['meets_bar'] else 'misses'} it)")
    print("CPU ms per batch: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                     result["cpu_ms_per_batch"].items()))
    write_json(result, FLAGS.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
