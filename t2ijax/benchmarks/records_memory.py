"""Training memory against dataset size: the streaming data path must not grow with the dataset.

  python -m t2ijax.benchmarks.records_memory --examples=10000,200000 --steps=50 --out=FILE.json

For each size N: writes a synthetic Parquet dataset (random 32 px RGB PNGs, unique captions, a key
column), preprocesses it (`python -m t2ijax.preprocess`), then trains --steps steps on the records
(`python -m t2ijax.main --config.data.records=...`), each in its own process, one at a time. The training
process's peak RSS is its own (os.wait4), not its parent's or the preprocessing's. The bar (issue 29):
the largest peak is within 10 % of the smallest.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from t2ijax.benchmarks.timing import under_load, write_json

FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS_PER_FILE = 10_000
WORDS = ("red", "blue", "green", "small", "large", "circle", "square", "triangle", "left", "right", "top",
         "bottom", "bright", "dark", "striped", "dotted")
BAR = 0.10  # issue 29: the largest training peak RSS at most 10 % above the smallest

CONFIG = """
from configs import shapes_tiny

def get_config():
    c = shapes_tiny.get_config()
    c.data.update(name="parquet", path={path!r}, key_column="key", captions=(("caption", 1.0),),
                  data_dir={data_dir!r}, num_validation={validation})
    c.total_steps = {steps}
    c.optim.warmup_steps = min(10, {steps})
    c.log.every_steps = c.checkpoint.every_steps = {steps}
    c.sample.every_steps = 0                 # one grid, at the end
    c.eval.update(metrics=("loss_t",), loss_examples={validation}, num_samples=8)
    return c
"""


def write_parquet(directory: str, count: int, seed: int = 0) -> int:
    """`count` rows {key, image: random 32x32 RGB PNG, caption: four random words and a unique id word} in
    files of ROWS_PER_FILE rows; returns the bytes written."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for first in range(0, count, ROWS_PER_FILE):
        rows = range(first, min(count, first + ROWS_PER_FILE))
        images = []
        for pixels in rng.integers(0, 256, (len(rows), 32, 32, 3), np.uint8):
            png = io.BytesIO()
            Image.fromarray(pixels).save(png, format="png")
            images.append(png.getvalue())
        words = rng.integers(0, len(WORDS), (len(rows), 4))
        captions = [" ".join(WORDS[w] for w in ws) + f" item{i}" for i, ws in zip(rows, words)]
        table = pa.table({"key": [f"{i:08d}" for i in rows], "image": pa.array(images, pa.binary()),
                          "caption": captions})
        pq.write_table(table, os.path.join(directory, f"part-{first // ROWS_PER_FILE:05d}.parquet"))
    return tree_bytes(directory)


def tree_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory) for name in names)


def run_child(command: list[str], log_path: str) -> tuple[float, int]:
    """Runs `command` in the repository, its output to `log_path`; (wall seconds, its peak RSS in bytes).
    Fails with the log's tail when it fails."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{tail}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def measure(count: int, steps: int, validation: int, overrides: list[str], workdir: str) -> dict:
    """Preprocess and train on a synthetic Parquet dataset of `count` images under `workdir`."""
    source_bytes = write_parquet(os.path.join(workdir, "parquet"), count)
    config = os.path.join(workdir, "config.py")
    with open(config, "w") as f:
        f.write(CONFIG.format(path=os.path.join(workdir, "parquet"), data_dir=os.path.join(workdir, "data"),
                              validation=validation, steps=steps))
    records = os.path.join(workdir, "records")
    both = [f"--config={config}", *(f"--config.{o}" for o in overrides)]
    preprocess_s, preprocess_rss = run_child([sys.executable, "-m", "t2ijax.preprocess", *both, f"--out={records}"],
                                             os.path.join(workdir, "preprocess.log"))
    train_s, train_rss = run_child([sys.executable, "-m", "t2ijax.main", *both, f"--config.data.records={records}",
                                    f"--workdir={os.path.join(workdir, 'run')}"], os.path.join(workdir, "train.log"))
    with open(os.path.join(records, "manifest.json")) as f:
        sets = {name: s["count"] for name, s in json.load(f)["sets"].items()}
    return {"examples": count, "record_counts": sets, "source_bytes": source_bytes,
            "records_bytes": tree_bytes(records), "preprocess_seconds": preprocess_s,
            "preprocess_peak_rss_bytes": preprocess_rss, "train_seconds": train_s, "train_peak_rss_bytes": train_rss}


def benchmark(sizes: list[int], steps: int, validation: int, overrides: list[str], workdir: str = "") -> dict:
    from t2ijax.benchmarks.timing import machine

    runs = []
    for count in sizes:
        if workdir:
            runs.append(measure(count, steps, validation, overrides, os.path.join(workdir, str(count))))
        else:
            with tempfile.TemporaryDirectory(prefix=f"records_memory_{count}_") as scratch:
                runs.append(measure(count, steps, validation, overrides, scratch))
    peaks = [r["train_peak_rss_bytes"] for r in runs]
    growth = max(peaks) / min(peaks) - 1
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "machine": machine(), "steps": steps, "overrides": overrides, "runs": runs,
            "train_peak_rss_growth": growth, "bar": BAR, "meets_bar": growth <= BAR}


def define_flags() -> None:
    """The command's flags (defined on running it: both benchmarks' modules import together)."""
    flags.DEFINE_list("examples", ["10000", "200000"], "Dataset sizes (images) to preprocess and train on.")
    flags.DEFINE_integer("steps", 50, "Training steps on each dataset.")
    flags.DEFINE_integer("validation", 64, "Held-out examples (config.data.num_validation).")
    flags.DEFINE_multi_string("set", [], "More config overrides for both commands, e.g. --set=model.depth=1.")
    flags.DEFINE_string("workdir", "", "Where the datasets, records and runs go (default: a temporary directory, "
                        "removed after each size).")
    flags.DEFINE_string("out", "", "Also write the result to this JSON file.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        sizes = [int(n) for n in FLAGS.examples]
    except ValueError:
        sys.exit(f"error: --examples={','.join(FLAGS.examples)} must be whole numbers of images, e.g. 10000,200000")
    if min(sizes) <= FLAGS.validation or FLAGS.steps < 1:
        sys.exit(f"error: every --examples must exceed --validation={FLAGS.validation} and --steps={FLAGS.steps} "
                 "must be at least 1")
    result = under_load(lambda: benchmark(sizes, FLAGS.steps, FLAGS.validation, FLAGS.set, FLAGS.workdir))
    for r in result["runs"]:
        print(f"{r['examples']:>8} images: train peak RSS {r['train_peak_rss_bytes'] / 2**30:.3f} GiB, "
              f"train {r['train_seconds']:.0f} s, preprocess {r['preprocess_seconds']:.0f} s, records "
              f"{r['records_bytes'] / 2**20:.0f} MiB")
    print(f"peak RSS growth {100 * result['train_peak_rss_growth']:.1f} % (bar {100 * BAR:.0f} %): "
          f"{'meets' if result['meets_bar'] else 'misses'} it")
    write_json(result, FLAGS.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
