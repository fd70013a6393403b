"""The records benchmarks at toy sizes: the JSON's fields and how they relate (not the speeds or the bars)."""
import pytest

from t2ijax.benchmarks import records_memory, records_throughput

TOY = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "text_encoder.name=none", "sampler.steps=2",
       "data.records_per_shard=64"]


def test_memory_benchmark_preprocesses_trains_and_reports_the_training_peak(tmp_path):
    result = records_memory.benchmark([120], steps=2, validation=16, overrides=TOY, workdir=str(tmp_path))
    (run,) = result["runs"]
    assert run["examples"] == 120 and run["record_counts"]["validation/32/32x32"] == 16
    assert run["record_counts"]["train/32/32x32"] == 120 - 16  # random PNGs: nothing filtered
    assert (tmp_path / "120" / "run" / "checkpoints").is_dir()  # the training command ran to its end
    assert run["records_bytes"] > run["examples"] * 32 * 32 * 3 // 2  # random pixels hardly compress
    assert 200 * 2**20 < run["train_peak_rss_bytes"] < 8 * 2**30  # a process with jax loaded, in bytes
    assert run["train_seconds"] > 0 and run["preprocess_seconds"] > 0
    assert result["train_peak_rss_growth"] == 0.0 and result["meets_bar"]  # one size: nothing to grow


def test_synthetic_parquet_has_unique_keys_and_captions(tmp_path):
    import pyarrow.parquet as pq

    records_memory.write_parquet(str(tmp_path), 25)
    table = pq.read_table(tmp_path)
    assert table.num_rows == 25 and len(set(table["key"].to_pylist())) == 25
    assert len(set(table["caption"].to_pylist())) == 25


def test_throughput_benchmark_streams_prx_small_records_with_workers_and_threads():
    result = records_throughput.benchmark(count=32, batch_size=8, timed=2, workers=1, threads=1, prefetch=1,
                                          per_shard=16)
    raw = 256 * 2304 * 2 + 32 * 32 * 16 * 2  # bf16 text and latent
    assert 0.5 * raw < result["bytes_per_record"] < 1.01 * raw + 4096
    assert result["records_per_s_workers"] > 0 and result["records_per_s_threads"] > 0
    assert set(result["cpu_ms_per_batch"]) == {"read_decode", "pad_text", "latent_float32", "whole_batch"}
    assert all(ms > 0 for ms in result["cpu_ms_per_batch"].values())
    assert result["meets_bar"] == (result["records_per_s_workers"] >= records_throughput.BAR)


@pytest.mark.parametrize("module, args", [(records_memory, ["--examples=10k"]), (records_memory, ["--steps=0"]),
                                          (records_throughput, ["--records=8", "--batch_size=64"])])
def test_bad_flags_are_one_line_errors(module, args):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module.__name__, *args], capture_output=True, text=True,
                          timeout=120, cwd=records_memory.REPO)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, \
        done.stderr
