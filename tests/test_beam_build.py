"""Stage 1 of preprocessing as a TFDS Apache Beam build: the DirectRunner with 2 worker processes writes the same
records (keys, images, captions, conversions, skip reasons), in the same order, with the same report, as the
in-process build; a killed chunk is rebuilt alone; records are read by index range.

Each chunk is its own Beam pipeline, and the DirectRunner starts its worker processes (each importing
TensorFlow) for each one: about 10 s a chunk on 2 cores, so the chunks here are few."""
import shutil

import pytest
from test_user_data import SIZING, assert_same, bad_entries, data_config, write_folder

from configs import base
from t2ijax.config import validate
from t2ijax.data import user_data, user_tfds
from t2ijax.data.folder import FolderSource
from t2ijax.errors import ConfigError

CHUNK = 9  # the 17 entries in 2 chunks: 9 and 8
BEAM = user_tfds.Engine("DirectRunner", workers=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, bad_entries())
    return FolderSource(data_config("image_folder", root, "").data)


def _built(source, data_dir, engine):
    examples = user_tfds.load(source, str(data_dir), SIZING, CHUNK, num_validation=2, engine=engine)
    return user_tfds.Build(source, str(data_dir), SIZING, CHUNK), examples


@pytest.fixture(scope="module")
def in_process(source, tmp_path_factory):
    return _built(source, tmp_path_factory.mktemp("in_process"), user_tfds.Engine())


@pytest.fixture(scope="module")
def beam(source, tmp_path_factory):
    return _built(source, tmp_path_factory.mktemp("beam"), BEAM)


def test_records_are_read_by_index_range(source, beam):
    build, examples = beam
    entries = user_data.listing(source).entries
    assert_same(user_tfds.read_range(build, entries, 5, 12), examples[5:12])  # across the chunks' border
    assert_same(user_tfds.read_range(build, entries, 9, 17), examples[9:])
    assert user_tfds.read_range(build, entries, 4, 4) == []
    with pytest.raises(ValueError, match="examples 10:18 of a listing of 17"):
        user_tfds.read_range(build, entries, 10, 18)


def test_a_beam_build_equals_the_in_process_build(source, in_process, beam):
    (build, examples), (beam_build, beam_examples) = in_process, beam
    assert {e.skipped for e in examples} > {"", "duplicate_key", "truncated"}  # kept and skipped entries
    assert_same(beam_examples, examples)  # in listing order: keys, skip reasons, captions, images bit-equal
    assert beam_build.report_path.read_text() == build.report_path.read_text()
    entries = user_data.listing(source).entries
    assert user_tfds.chunk_lengths(beam_build, entries) == [9, 8]


def test_a_killed_chunk_is_rebuilt_alone(source, in_process, beam, tmp_path, monkeypatch):
    shutil.copytree(beam[0].data_dir, tmp_path, dirs_exist_ok=True)
    build = user_tfds.Build(source, str(tmp_path), SIZING, CHUNK)
    first, second = sorted((tmp_path / "user_data").glob(f"{build.name}_chunk*"))
    shutil.rmtree(second / "1.0.0")
    (second / "incomplete.KILLED_1.0.0").mkdir()  # what a SIGKILL mid-build leaves
    untouched = {p: p.stat().st_mtime_ns for p in (first / "1.0.0").iterdir()}
    entries = user_data.listing(source).entries

    def not_here(*args):
        raise AssertionError("an entry was converted in the launching process, not by a Beam worker")

    monkeypatch.setattr(user_tfds, "example", not_here)  # the workers import user_tfds afresh
    user_tfds.build_chunks(build, entries, engine=BEAM)
    monkeypatch.undo()
    assert {p: p.stat().st_mtime_ns for p in (first / "1.0.0").iterdir()} == untouched
    assert [p.name for p in second.iterdir()] == ["1.0.0"]
    assert_same(user_tfds.read(build, entries), in_process[1])


def test_workers_get_runs_of_one_file_with_their_first_index(monkeypatch):
    monkeypatch.setattr(user_tfds, "PIECE", 2)
    entries = [user_data.Entry(f"k{i}", (file, i)) for i, file in enumerate("aaaba")]
    assert [(first, [e.key for e in piece]) for first, piece in user_tfds._pieces(entries)] == \
           [(0, ["k0", "k1"]), (2, ["k2"]), (3, ["k3"]), (4, ["k4"])]


def test_beam_options_reach_the_runner():
    local = BEAM.download_config()
    assert local["beam_runner"] == "DirectRunner"
    assert local["beam_options"].get_all_options()["direct_num_workers"] == 2
    assert local["beam_options"].get_all_options()["direct_running_mode"] == "multi_processing"
    dataflow = user_tfds.Engine("DataflowRunner", options=("--project=P", "--region=R")).download_config()
    options = dataflow["beam_options"].get_all_options()
    assert (options["project"], options["region"], options["direct_running_mode"]) == ("P", "R", "in_memory")
    assert user_tfds.Engine().download_config() == {}


@pytest.mark.parametrize("field, value, message", [
    ("beam_workers", 0, "config.data.beam_workers=0 must be at least 1"),
    ("beam_options", ("project=P",), r"config.data.beam_options=\('project=P',\) must be pipeline option strings"),
])
def test_bad_beam_fields_are_one_line_errors(field, value, message):
    c = base.get_config()
    c.data[field] = value
    with pytest.raises(ConfigError, match=message):
        validate(c, 1)
