"""Preprocessing writes the same records however it runs (interrupted and rerun, one process or two), and
each process of a run streams only its rows of every global batch, which together are the one-process batch."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from conftest import env_with_devices, error_line, tiny_config
from t2ijax.data import manifest, pipeline, records, write_records
from t2ijax.errors import ConfigError
from test_fault_tolerance import REPO, _free_port

PER_SHARD = 48  # 256 training examples: 6 shards, the last one short; 64 validation examples: 2


def records_config(data_dir: str, out: str):
    config = tiny_config(data_dir)
    config.data.update(records=str(out), records_per_shard=PER_SHARD)
    return config


def raw_records(directory: str) -> dict[str, bytes]:
    """Every record of every set, by set and index: the bytes as stored."""
    import grain

    found = manifest.read(directory)
    out = {}
    for name, entry in found["sets"].items():
        source = grain.sources.ArrayRecordDataSource([os.path.join(directory, name, shard)
                                                      for shard, _ in entry["shards"]])
        out.update((f"{name}#{i}", source[i]) for i in range(len(source)))
    return out


@pytest.fixture(scope="module")
def whole(data_dir, tmp_path_factory):
    """Records written uninterrupted by one process: (directory, manifest)."""
    return write_records.write(records_config(data_dir, tmp_path_factory.mktemp("records") / "whole"))


def test_manifest_counts_every_set_and_says_what_made_the_records(whole):
    directory, found = whole
    config = records_config("unused", directory)
    assert found["sets"]["train/32/32x32"]["count"] == 256 and found["sets"]["validation/32/32x32"]["count"] == 64
    assert [count for _, count in found["sets"]["train/32/32x32"]["shards"]] == [48] * 5 + [16]
    assert found["made_with"]["text_encoder.layer"] == config.text_encoder.layer
    assert found["made_with"]["data.text_dtype"] == "bfloat16" and found["text_dim"] == 384
    assert found["texts"] == list(dict.fromkeys(["", config.sampler.negative_prompt, *config.sample.prompts]))
    example = pipeline.read_set(directory, found, "train/32/32x32", count=1)[0]
    assert example["text"].dtype.name == "bfloat16" and example["text"].shape[0] == example["text_lengths"].sum()
    empty = pipeline.read_set(directory, found, write_records.TEXTS_SET, count=1)[0]
    assert empty["caption"] == "" and empty["text"].shape == (2, 384)  # unpadded: [CLS] [SEP] of max_length 16


def preprocess_command(data_dir: str, out, per_shard: int = PER_SHARD) -> list[str]:
    return [sys.executable, "-m", "t2ijax.preprocess", "--config=configs/shapes_tiny.py", f"--out={out}",
            f"--config.data.data_dir={data_dir}", "--config.data.num_train=256", "--config.data.num_validation=64",
            "--config.text_encoder.max_length=16", f"--config.data.records_per_shard={per_shard}"]


def test_a_killed_run_rerun_writes_only_the_missing_shards_and_the_same_records(whole, data_dir, tmp_path):
    out = tmp_path / "records"
    shards = out / "train/32/32x32"
    job = subprocess.Popen(preprocess_command(data_dir, out, per_shard=8), cwd=REPO, env=env_with_devices(1),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(shards.glob("*.array_record"))) < 3:
        assert job.poll() is None, "preprocessing ended before it could be killed"
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = {str(p.relative_to(out)) for p in shards.glob("*.array_record")}
    assert 3 <= len(finished) < 32 and manifest.read(str(out)) is None  # the manifest is written last

    times = {name: (out / name).stat().st_mtime_ns for name in finished}
    rerun = subprocess.run(preprocess_command(data_dir, out, per_shard=8), cwd=REPO, env=env_with_devices(1),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"records: {out}" in rerun.stdout and "train/32/32x32 256, validation/32/32x32 64" in rerun.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == times  # not written again
    assert len(list(shards.glob("*.array_record"))) == 32 and not list(out.rglob("*.tmp-*"))
    # Records do not depend on the shard size; the texts set differs: the CLI's config has all sample prompts.
    assert {k: v for k, v in raw_records(str(out)).items() if not k.startswith("texts")} == \
        {k: v for k, v in raw_records(str(whole[0])).items() if not k.startswith("texts")}


def test_two_processes_write_the_same_records_and_stream_disjoint_halves_of_each_batch(whole, data_dir, tmp_path):
    out = tmp_path / "records"
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {os.path.join(REPO, "tests")!r})
        from conftest import tiny_config
        import jax
        from t2ijax.sharding import initialize_distributed
        from t2ijax.data import pipeline, write_records

        config = tiny_config({data_dir!r})
        config.data.update(records={str(out)!r}, records_per_shard={PER_SHARD})
        config.distributed.update(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
        initialize_distributed(config.distributed)
        directory, found = write_records.write(config)
        batches = pipeline.phase_batches(config, directory, found, ["train/32/32x32"], 8, config.seed,
                                         jax.process_index(), jax.process_count())
        read = []
        original = batches.sets[0].read_counted
        batches.sets[0].read_counted = lambda indices: (read.append([int(i) for i in indices]), original(indices))[1]
        steps = [batches(step) for step in range(4)]
        np.savez({str(tmp_path)!r} + f"/process{{jax.process_index()}}.npz", read=np.array(read),
                 **{{f"{{k}}{{s}}": np.asarray(b[k], np.float32) for s, b in enumerate(steps) for k in b}})
    """)
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", script, address, str(i)], cwd=REPO, env=env_with_devices(1),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert raw_records(str(out)) == raw_records(str(whole[0]))

    directory, found = whole
    single = pipeline.phase_batches(records_config(data_dir, directory), directory, found, ["train/32/32x32"], 8,
                                    0, 0, 1)
    halves = [np.load(tmp_path / f"process{i}.npz") for i in range(2)]
    for step in range(4):
        rows = [set(h["read"][step]) for h in halves]
        assert not rows[0] & rows[1] and len(rows[0]) == len(rows[1]) == 4
        expected = single(step)
        assert expected.pop(pipeline.BAD_RECORDS) == 0 and all(h[f"{pipeline.BAD_RECORDS}{step}"] == 0 for h in halves)
        for key in expected:
            together = np.concatenate([h[f"{key}{step}"] for h in halves])
            np.testing.assert_array_equal(together, np.asarray(expected[key], np.float32), err_msg=f"{key} {step}")


def test_records_of_other_settings_are_refused_naming_both(whole, data_dir):
    directory, found = whole
    config = records_config(data_dir, directory)
    config.text_encoder.layer = 2
    with pytest.raises(ConfigError, match=r"made with text_encoder.layer=4, the config asks 2") as error:
        manifest.check(found, config, str(directory))
    assert "\n" not in str(error.value)
    config = records_config(data_dir, directory)
    config.latents.normalization = "channel_stats"
    config.autoencoder.name = "identity"
    manifest.check(found, config, str(directory))  # pixel space: the normalization changes no record
    config.data.text_dtype = "float16"
    with pytest.raises(ConfigError, match="data.text_dtype='bfloat16', the config asks 'float16'"):
        manifest.check(found, config, str(directory))


def test_training_on_records_of_another_text_layer_is_one_line_before_compiling(whole, data_dir, tmp_path):
    directory, _ = whole
    proc = subprocess.run([sys.executable, "-m", "t2ijax.main", f"--workdir={tmp_path / 'run'}",
                           "--config=configs/shapes_tiny.py", f"--config.data.data_dir={data_dir}",
                           "--config.data.num_train=256", "--config.data.num_validation=64",
                           "--config.text_encoder.max_length=16", f"--config.data.records={directory}",
                           "--config.text_encoder.layer=3"],
                          cwd=REPO, env=env_with_devices(1), capture_output=True, text=True, timeout=300)
    assert "made with text_encoder.layer=4, the config asks 3" in error_line(proc)
    assert "compiled" not in proc.stderr


def test_a_missing_shard_and_a_corrupt_record_are_named_or_skipped_and_counted(whole, tmp_path):
    directory, found = whole
    shards = found["sets"]["validation/32/32x32"]["shards"]
    copy = tmp_path / "validation"
    copy.mkdir()
    for name, _ in shards:
        (copy / name).write_bytes((pathlib.Path(directory) / "validation/32/32x32" / name).read_bytes())

    second = records.RecordSet(str(copy), [shards[1]]).read(range(shards[1][1]))
    broken = [records.encode(r) for r in second]
    broken[2] = broken[2][:40]  # record 50 (record 2 of the second shard) cut short: its header no longer parses
    writer = ArrayRecordWriter(str(copy / shards[1][0]), records.WRITER_OPTIONS)
    for record in broken:
        writer.write(record)
    writer.close()
    with pytest.raises(records.RecordError, match=rf"corrupt record: {copy}/{shards[1][0]} record 2 ") as error:
        records.RecordSet(str(copy), shards).read([49, 50])
    assert "\n" not in str(error.value)
    skipping = records.RecordSet(str(copy), shards, skip_bad=True)
    read = skipping.read([49, 50])
    assert skipping.skipped == 1 and read[0]["key"].endswith("#49")
    assert read[1]["key"].endswith("#51")  # the next readable record stands in

    (copy / shards[1][0]).write_bytes((copy / shards[1][0]).read_bytes()[:1000])  # a shard cut short
    with pytest.raises(records.RecordError, match=rf"record shard {copy}/{shards[1][0]} cannot be read"):
        records.RecordSet(str(copy), shards)
    (copy / shards[0][0]).unlink()
    with pytest.raises(records.RecordError, match=rf"record shard {copy}/{shards[0][0]} is missing"):
        records.RecordSet(str(copy), shards)


class InMemory:
    """An example set (t2ijax/data/sources.py) of arrays in memory."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.count = arrays, len(arrays["image"])

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.arrays.items()}


def loud_bert(directory) -> str:
    """A tiny random BERT whose first layer's output norm scales by 1e5: activations beyond float16's range."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        model.encoder.layer[0].output.LayerNorm.weight.fill_(1e5)
    model.save_pretrained(directory)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(95)]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return str(directory)


def test_a_text_layer_beyond_float16_fails_naming_the_field_layer_and_example(data_dir, tmp_path):
    config = records_config(data_dir, tmp_path / "records")
    config.text_encoder.update(path=loud_bert(tmp_path / "bert"), name="loud-bert", layer=1)
    split = InMemory({"image": np.zeros((2, 32, 32, 3), np.uint8),
                      "caption_long": np.asarray(["word1 word2", "word3"], object)})
    config.data.text_dtype = "float16"
    with pytest.raises(ConfigError, match=r"caption of validation/32/32x32 example 0 \(text_encoder.layer=1\) "
                                          r"holds .* outside float16's range") as error:
        write_records.validation_examples(write_records.Encoders(config), split, None, "validation/32/32x32",
                                          (32, 32), 32)(0, 2)
    assert "\n" not in str(error.value)
    config.data.text_dtype = "bfloat16"  # the default holds it
    written = write_records.validation_examples(write_records.Encoders(config), split, None, "validation/32/32x32",
                                                (32, 32), 32)(0, 2)
    assert np.abs(written[0]["text"].astype(np.float32)).max() > 65504


def test_a_stream_started_at_step_k_and_worker_processes_give_step_ks_batch(whole):
    """Resuming needs nothing but the step: the stream restarted there yields what an uninterrupted one does."""
    directory, found = whole
    config = records_config("unused", directory)
    batches = pipeline.phase_batches(config, directory, found, ["train/32/32x32"], 8, 0, 0, 1)
    steps = 40  # 320 examples of 256: the second epoch, in its own order, begins at step 32
    expected = [batches(step) for step in range(steps)]
    config.data.read_threads = 3
    resumed = list(batches.stream(29, steps, config.data))
    config.data.read_workers = 2
    from_workers = list(batches.stream(0, steps, config.data))
    for step in range(steps):
        for got in ([resumed[step - 29]] if step >= 29 else []) + [from_workers[step]]:
            assert got.keys() == expected[step].keys()
            for key in got:
                np.testing.assert_array_equal(got[key], expected[step][key], err_msg=f"{key} at step {step}")


def test_a_lost_shard_of_finished_records_is_written_again_by_a_rerun(whole, data_dir, tmp_path):
    directory, found = whole
    copy = tmp_path / "records"
    shutil.copytree(directory, copy)
    lost = copy / "train/32/32x32" / found["sets"]["train/32/32x32"]["shards"][2][0]
    lost.unlink()
    kept = (copy / "train/32/32x32" / found["sets"]["train/32/32x32"]["shards"][0][0]).stat().st_mtime_ns
    write_records.write(records_config(data_dir, copy))
    assert lost.exists() and (copy / "train/32/32x32" / found["sets"]["train/32/32x32"]["shards"][0][0]
                              ).stat().st_mtime_ns == kept
    assert raw_records(str(copy)) == raw_records(str(directory))
