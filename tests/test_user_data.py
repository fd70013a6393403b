"""User datasets: bad entries converted or skipped and counted, resumable and sharded chunked builds,
the same examples through image_folder, webdataset and parquet, one-line errors for bad configs, and hostile
inputs (names, links, loops, bombs, strips, broken files) skipped or ignored and counted, never a crash or a hang."""
import contextlib
import gzip
import io
import json
import os
import signal
import struct
import tarfile
import zlib
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs import base
from t2ijax.config import validate
from t2ijax.data import sources, user_data, user_tfds
from t2ijax.data.folder import FolderSource
from t2ijax.data.parquet import ParquetSource
from t2ijax.data.user_data import Raw
from t2ijax.data.webdataset import WebDatasetSource
from t2ijax.errors import ConfigError

SIDE = 16  # data.resolution: images of fewer than 16*16 pixels are too small


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _noise(height, width, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def _half_transparent() -> Image.Image:
    pixels = np.zeros((24, 24, 4), np.uint8)
    pixels[..., 1] = 255
    pixels[:, 12:, 3] = 255  # the left half transparent: white once composited
    return Image.fromarray(pixels, "RGBA")


# name -> (image bytes, {sidecar suffix: bytes}); sorted by name, this is the listing order
def bad_entries() -> dict[str, tuple[bytes, dict[str, bytes]]]:
    jpeg = _encoded(Image.fromarray(_noise(64, 64, 1)), "JPEG")

    def txt(text):
        return {".txt": text.encode()}

    return {
        "alpha.png": (_encoded(_half_transparent(), "PNG"),
                      {".json": json.dumps({"caption": "green", "short": "g"}).encode()}),
        "bad_json.png": (_encoded(Image.fromarray(_noise(20, 20)), "PNG"), {".json": b"{not json"}),
        "cmyk.jpg": (_encoded(Image.fromarray(_noise(24, 24, 2)).convert("CMYK"), "JPEG"), txt("a cmyk photo")),
        "corrupt.png": (b"not an image at all", txt("corrupt")),
        "deep.png": (_encoded(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"), txt("sixteen bits")),
        "dup.jpg": (_encoded(Image.fromarray(_noise(24, 40, 3)), "JPEG"), txt("the first of two")),
        "dup.png": (_encoded(Image.fromarray(_noise(24, 40, 4)), "PNG"), txt("the first of two")),
        "empty.png": (_encoded(Image.fromarray(_noise(20, 20)), "PNG"), txt("  \n")),
        "grey.png": (_encoded(Image.fromarray(np.full((20, 30), 100, np.uint8), "L"), "PNG"), txt("grey")),
        "grey_alpha.png": (_encoded(Image.fromarray(np.full((20, 20, 2), 50, np.uint8), "LA"), "PNG"), txt("la")),
        "latin1.png": (_encoded(Image.fromarray(_noise(20, 20)), "PNG"), {".txt": "café".encode("latin-1")}),
        "palette.png": (_encoded(Image.fromarray(_noise(20, 20, 5)).convert("P"), "PNG"), txt("palette colours")),
        "rgb.png": (_encoded(Image.fromarray(_noise(20, 40, 6)), "PNG"), txt("a wide  noisy image\n")),
        "small.png": (_encoded(Image.fromarray(_noise(8, 8)), "PNG"), txt("too small")),
        "sub/multi.jpg": (jpeg, {".json": json.dumps({"long": "a long one here", "short": "short", "n": 3}).encode()}),
        "truncated.jpg": (jpeg[:len(jpeg) // 2], txt("cut short")),
        "uncaptioned.png": (_encoded(Image.fromarray(_noise(20, 20)), "PNG"), {}),
    }


SKIPPED = {"duplicate_key": 1, "caption_not_json": 1, "unreadable": 1, "caption_empty": 1, "caption_not_utf8": 1,
           "too_small": 1, "truncated": 1, "caption_missing": 1}
CONVERTED = {"CMYK": 1, "I;16": 1, "L": 1, "LA": 1, "P": 1, "RGBA": 1}


def write_folder(root, entries):
    for name, (image, sidecars) in entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(image)
        for suffix, data in sidecars.items():
            (root / name).with_suffix(suffix).write_bytes(data)


def write_shards(root, entries, per_shard=5):
    """WebDataset shards of `per_shard` entries: each image, then its sidecars unless already written (dup.txt
    follows dup.jpg, so dup.png joins their group, as it shares dup.txt in the folder)."""
    root.mkdir()
    written = set()
    names = list(entries)
    for start in range(0, len(names), per_shard):
        with tarfile.open(root / f"shard-{start // per_shard:03d}.tar", "w") as tar:
            for name in names[start:start + per_shard]:
                image, sidecars = entries[name]
                stem = name.rsplit(".", 1)[0]
                for member, data in [(name, image), *((stem + s, d) for s, d in sidecars.items())]:
                    if member not in written:
                        info = tarfile.TarInfo(member)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                        written.add(member)


def write_parquet(root, entries, rows_per_file=7):
    """Parquet: a key column, the image bytes (plain binary, or every other file the struct Hugging Face
    datasets write), a column per caption field (null where an entry has none)."""
    root.mkdir()
    rows = []
    for name, (image, sidecars) in entries.items():
        fields = json.loads(sidecars[".json"]) if ".json" in sidecars else {}
        fields = {k: v for k, v in fields.items() if isinstance(v, str)}
        if ".txt" in sidecars:
            fields["caption"] = sidecars[".txt"].decode()
        rows.append({"key": name.rsplit(".", 1)[0], "jpeg": image, **fields})
    hugging_face = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for i in range(0, len(rows), rows_per_file):
        part, struct = rows[i:i + rows_per_file], i // rows_per_file % 2 == 1
        images = [{"bytes": r["jpeg"], "path": r["key"]} if struct else r["jpeg"] for r in part]
        table = pa.table({"key": pa.array([r["key"] for r in part]),
                          "jpeg": pa.array(images, hugging_face if struct else pa.binary()),
                          **{c: pa.array([r.get(c) for r in part], pa.string()) for c in ("caption", "short", "long")}})
        pq.write_table(table, root / f"part-{i // rows_per_file}.parquet", row_group_size=3)


def data_config(name, path, data_dir, **data):
    c = base.get_config()
    c.data.update({"name": name, "path": str(path), "data_dir": str(data_dir), "resolution": SIDE,
                   "num_validation": 2, "build_chunk": 4, **data})
    return c


SIZING = user_data.Sizing(((SIDE, SIDE),), ((SIDE, SIDE),), max_pixels=10**6)


def load(source, data_dir, sizing=SIZING, num_validation=2):
    return user_tfds.load(source, str(data_dir), sizing, build_chunk=4, num_validation=num_validation)


def assert_same(examples, expected):
    assert [(e.key, e.skipped, e.converted, e.captions) for e in examples] == \
           [(e.key, e.skipped, e.converted, e.captions) for e in expected]
    for got, want in zip(examples, expected):
        assert (got.image is None) == (want.image is None)
        if got.image is not None:
            np.testing.assert_array_equal(got.image, want.image)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, bad_entries())
    return root


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    """The bad folder built once, uninterrupted, in buckets of a 16 px grid: (data_dir, examples)."""
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, load(FolderSource(data_config("image_folder", folder, data_dir).data), data_dir)


def test_bad_entries_are_converted_or_skipped_and_counted(built):
    data_dir, examples = built
    summary = user_data.report([user_data.summarize(e) for e in examples], ((SIDE, SIDE),))
    assert summary["entries"] == 17 and summary["kept"] == 9
    assert summary["skipped"] == SKIPPED and summary["converted"] == CONVERTED
    assert summary["buckets"] == {"16x16": 9}
    assert summary["captions"]["caption"] == {"empty": 1, "min": 1, "median": 2.0, "p90": 4.0, "max": 4}
    assert summary["captions"]["long"] == {"empty": 8, "min": 4, "median": 4.0, "p90": 4.0, "max": 4}
    [written] = (data_dir / "user_data").glob("*.report.json")
    assert json.loads(written.read_text()) == {**summary, "ignored": {}, "files_skipped": {}}
    by_key = {e.key: e for e in examples if e.skipped != "duplicate_key"}
    assert by_key["dup"].captions == {"caption": "the first of two"} and by_key["dup"].converted == ""
    assert by_key["sub/multi"].captions == {"long": "a long one here", "short": "short"}
    assert by_key["rgb"].captions == {"caption": "a wide  noisy image"}
    alpha = by_key["alpha"].image
    np.testing.assert_array_equal(alpha[:, :SIDE // 2 - 1], 255)  # transparent -> white
    np.testing.assert_array_equal(alpha[:, SIDE // 2 + 1:], np.broadcast_to([0, 255, 0], (SIDE, SIDE // 2 - 1, 3)))
    np.testing.assert_array_equal(by_key["deep"].image, 40000 >> 8)  # 16-bit grey keeps its top 8 bits
    np.testing.assert_array_equal(by_key["grey"].image, 100)
    for e in examples:
        assert e.image is None or (e.image.shape == (SIDE, SIDE, 3) and e.image.dtype == np.uint8)


def test_photos_are_turned_upright_by_their_exif_orientation():
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = 255  # the left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image is to be turned 90 degrees clockwise
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", exif=exif)
    image, converted = user_data.decode(out.getvalue(), SIZING.max_pixels)
    upright = np.asarray(image)
    assert upright.shape == (20, 10, 3) and converted == ""
    assert upright[:9].min() == 255 and upright[11:].max() == 0  # the white half now on top


def test_splits_and_buckets_through_sources(folder, built):
    data_dir, examples = built
    c = data_config("image_folder", folder, data_dir)
    c.resolution.buckets = True
    grid = ((12, 20), (16, 16), (20, 12))  # 240 px is the smallest: "small" stays too small
    groups, report = sources.load_buckets(c.data, "train", grid)
    validation = sources.load_split(c.data, "validation")
    held_out = user_data.held_out([e.key for e in examples if e.skipped != "duplicate_key"], 2)
    train = [e for e in examples if e.key not in held_out]
    assert report["skipped"] == dict(Counter(e.skipped for e in train if e.skipped))
    wide = {e.key for e in train if e.key in ("rgb", "dup", "grey") and not e.skipped}  # aspects 2, 5/3, 3/2
    kept = sum(not e.skipped for e in train)
    assert report["buckets"] == {"12x20": len(wide), "16x16": kept - len(wide), "20x12": 0}
    assert list(groups) == [size for size in grid if report["buckets"]["x".join(map(str, size))]]
    for size, group in groups.items():
        assert group["image"].shape[1:3] == size and set(group) == {"image", "caption", "short", "long"}
    kept_held_out = [e for e in examples if e.key in held_out and not e.skipped]
    assert len(validation["image"]) == len(kept_held_out)
    assert list(validation["caption"]) == [e.captions.get("caption", "") for e in kept_held_out]


def test_killed_build_resumes_to_the_same_dataset(folder, built, tmp_path, monkeypatch):
    source = FolderSource(data_config("image_folder", folder, tmp_path).data)
    real_example = user_tfds.example

    def dies_in_the_third_chunk(key, *args):
        if key == "latin1":  # entry 11 of 17, in the middle of chunk 2 (entries 9-12)
            raise KeyboardInterrupt("killed")
        return real_example(key, *args)

    monkeypatch.setattr(user_tfds, "example", dies_in_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        load(source, tmp_path)
    chunks = sorted((tmp_path / "user_data").iterdir())
    assert [p.name[-17:] for p in chunks] == ["chunk00000of00005", "chunk00001of00005", "chunk00002of00005"]
    assert not list(chunks[2].iterdir())  # TFDS removed what it had written of chunk 2
    (chunks[2] / "incomplete.KILLED_1.0.0").mkdir()  # what a SIGKILL leaves instead
    done = [(p / "1.0.0").stat().st_mtime_ns for p in chunks[:2]]
    monkeypatch.setattr(user_tfds, "example", real_example)
    assert_same(load(source, tmp_path), built[1])
    assert [(p / "1.0.0").stat().st_mtime_ns for p in chunks[:2]] == done  # not rebuilt
    assert [p.name for p in chunks[2].iterdir()] == ["1.0.0"]


def test_the_three_formats_give_the_same_examples(folder, built, tmp_path):
    entries = bad_entries()
    write_shards(tmp_path / "shards", entries)
    assert_same(load(WebDatasetSource(data_config("webdataset", tmp_path / "shards", "").data), tmp_path / "w"),
                built[1])
    # a parquet string column cannot hold bytes that are not UTF-8 or JSON that does not parse
    expressible = {k: v for k, v in entries.items() if k not in ("latin1.png", "bad_json.png")}
    write_parquet(tmp_path / "parquet", expressible)
    parquet_config = data_config("parquet", tmp_path / "parquet", "", image_column="jpeg", key_column="key")
    parquet = ParquetSource(parquet_config.data)
    assert_same(load(parquet, tmp_path / "p"), [e for e in built[1] if e.key not in ("latin1", "bad_json")])


def test_a_two_process_build_equals_a_one_process_build(folder, built, tmp_path):
    source = FolderSource(data_config("image_folder", folder, tmp_path).data)
    build = user_tfds.Build(source, str(tmp_path), SIZING, 4)
    entries = user_data.listing(source).entries
    user_tfds.build_chunks(build, entries, process_index=1, process_count=2)
    assert sorted(p.name[-len("chunk00000of00005"):] for p in (tmp_path / "user_data").iterdir()) == \
           ["chunk00001of00005", "chunk00003of00005"]
    user_tfds.build_chunks(build, entries, process_index=0, process_count=2)
    assert_same(user_tfds.read(build, entries), built[1])


def test_bad_configs_are_one_line_errors(tmp_path):
    src, out = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    for name in sources.USER_FORMATS:
        with pytest.raises(ConfigError, match=f"config.data.path is empty; set it to .* for config.data.name='{name}'"):
            validate(data_config(name, "", out), 1)
        with pytest.raises(ConfigError, match="is not a directory \\(nor a glob\\)"):
            validate(data_config(name, src / "missing", out), 1)
        with pytest.raises(ConfigError, match="holds no images"):
            validate(data_config(name, src, out), 1)
    (src / "captions_only.txt").write_text("a caption without its image")
    with pytest.raises(ConfigError, match=r"holds no images \(no .jpg"):
        validate(data_config("image_folder", src, out), 1)
    with tarfile.open(src / "text.tar", "w") as tar:
        info = tarfile.TarInfo("a.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ConfigError, match="shards of config.data.path=.* hold no image members"):
        validate(data_config("webdataset", src / "*.tar", out), 1)
    pq.write_table(pa.table({"png": [b"x"], "caption": ["a"]}), src / "a.parquet")
    with pytest.raises(ConfigError, match=r"config.data.image_column='image' is not a column of .*a.parquet "
                                          r"\(its columns: png, caption\)"):
        validate(data_config("parquet", src, out), 1)
    with pytest.raises(ConfigError, match="image_column='caption' of .*a.parquet holds string, not encoded"):
        validate(data_config("parquet", src, out, image_column="caption"), 1)
    with pytest.raises(ConfigError, match="config.data.key_column='id' is not a column"):
        validate(data_config("parquet", src, out, image_column="png", key_column="id"), 1)
    with pytest.raises(ConfigError, match="num_validation=2 leaves no training image of the 1"):
        validate(data_config("parquet", src, out, image_column="png"), 1)
    with pytest.raises(ConfigError, match="data_dir=.*/data' lies inside config.data.path"):
        validate(data_config("parquet", src, src / "data", image_column="png", num_validation=0), 1)
    with pytest.raises(ConfigError, match="build_chunk=0 must be a positive number"):
        validate(data_config("parquet", src, out, image_column="png", build_chunk=0), 1)


# ------------------------------------------------------------------------------------ hostile inputs


def png_header(width, height) -> bytes:
    """A PNG that claims width x height pixels and holds none: decoding it fails, its header reads."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@contextlib.contextmanager
def within(seconds):
    """Fails the block, rather than hanging the test, when it runs longer than `seconds`."""
    def expire(*_):
        pytest.fail(f"still running after {seconds} s")  # not an OSError, which the code under test may catch

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


SECRET = "root:x:0:0:a file outside the dataset"


def write_hostile_folder(tmp_path):
    """A folder with what a hostile (or careless) archive holds; outside it, a secret and an image."""
    (tmp_path / "secret.txt").write_text(SECRET)
    Image.fromarray(_noise(20, 20)).save(tmp_path / "outside.png")
    good = _encoded(Image.fromarray(_noise(20, 20, 7)), "PNG")
    root = tmp_path / "folder"
    write_folder(root, {
        "ok.png": (good, {".txt": b"fine"}),
        "leak.png": (good, {}),
        "x.jpg/inner.png": (good, {".txt": b"inside a directory named like an image"}),
        "strip.png": (_encoded(Image.fromarray(_noise(1, 5000)), "PNG"), {".txt": b"a 1x5000 strip"}),
        "bomb.png": (png_header(30000, 30000), {".txt": b"a decompression bomb"}),
        "big.png": (png_header(2000, 2000), {".txt": b"more pixels than max_pixels"}),
        "bom.png": (good, {".txt": b"\xef\xbb\xbfa caption after a byte-order mark\n"}),
        "bom_json.png": (good, {".json": b'\xef\xbb\xbf{"caption": "json after a mark"}'}),
        "surrogate.png": (good, {".json": b'{"caption": "\\ud800"}'}),
    })
    (root / os.fsdecode(b"caf\xe9.png")).write_bytes(good)  # a name that is not UTF-8
    (root / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "outside.png").symlink_to(tmp_path / "outside.png")
    (root / "linked.png").symlink_to("ok.png")  # inside the root: read
    (root / "linked.txt").write_text("a link inside the folder")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "loop_dir").symlink_to(".")
    (root / "orphan.txt").write_text("a caption without its image")
    (root / "README.md").write_text("notes")
    return root


HOSTILE_IGNORED = {"broken_link": 2, "link_outside_root": 2, "name_not_utf8": 1, "not_a_file": 2,
                   "orphan_caption": 1, "other_file": 1}


def test_a_hostile_folder_builds_and_its_report_counts_everything_it_ignored(tmp_path):
    root = write_hostile_folder(tmp_path)
    examples = load(FolderSource(data_config("image_folder", root, "").data), tmp_path / "data", num_validation=0)
    summary = json.loads(next((tmp_path / "data" / "user_data").glob("*.report.json")).read_text())
    assert summary["ignored"] == HOSTILE_IGNORED and summary["files_skipped"] == {}
    assert summary["skipped"] == {"caption_missing": 1, "caption_not_utf8": 1, "too_large": 2, "too_small": 1}
    kept = {e.key: e.captions for e in examples if not e.skipped}
    assert kept == {"ok": {"caption": "fine"}, "linked": {"caption": "a link inside the folder"},
                    "x.jpg/inner": {"caption": "inside a directory named like an image"},
                    "bom": {"caption": "a caption after a byte-order mark"},
                    "bom_json": {"caption": "json after a mark"}}
    assert summary["entries"] == len(examples) == 10
    assert not any(SECRET in json.dumps(e.captions) for e in examples)


def test_links_never_leave_the_dataset_root(tmp_path):
    root = write_hostile_folder(tmp_path)
    for path in (root, root / "*.png"):  # a glob looks its sidecars up beside its images
        source = FolderSource(data_config("image_folder", path, "").data)
        found = user_data.listing(source)
        assert found.ignored["leak.txt"] == found.ignored["outside.png"] == "link_outside_root"
        raws = dict(zip((e.key for e in found.entries), source.read(found.entries)))
        assert raws["leak"].sidecars == {} and raws["linked"].sidecars == {".txt": b"a link inside the folder"}
        assert "outside" not in raws and all(SECRET.encode() not in r.sidecars.get(".txt", b"") for r in raws.values())


def test_link_loops_end_and_are_counted(tmp_path):
    root = write_hostile_folder(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")  # with loop_dir, 2**depth paths for a walk that follows links
    with within(20):
        found = user_data.listing(FolderSource(data_config("image_folder", root / "**" / "*.png", "").data))
    assert found.ignored == {"dangling.png": "broken_link", "outside.png": "link_outside_root",
                             "leak.txt": "link_outside_root", "caf\\xe9": "name_not_utf8"}  # what the glob asks for
    assert "x.jpg/inner" in {e.key for e in found.entries}
    ignored = user_data.listing(FolderSource(data_config("image_folder", root, "").data)).ignored
    assert {name: ignored[name] for name in ("loop.jpg", "loop_dir", "sub/up")} == \
           {"loop.jpg": "broken_link", "loop_dir": "not_a_file", "sub/up": "not_a_file"}


def test_a_strip_is_too_small_rather_than_upscaled():
    strip = Raw(_encoded(Image.fromarray(_noise(1, 5000)), "PNG"), {".txt": b"a strip"})  # 5000 px > 16 x 16
    with pytest.raises(user_data.Skip, match="too_small"):
        user_data.example("strip", strip, SIZING)
    grid = ((12, 20), (16, 16), (20, 12))
    narrow = Raw(_encoded(Image.fromarray(_noise(11, 300)), "PNG"), {".txt": b"too narrow for 12x20"})
    with pytest.raises(user_data.Skip, match="too_small"):
        user_data.example("narrow", narrow, user_data.Sizing(grid, grid, 10**6))
    wide = Raw(_encoded(Image.fromarray(_noise(12, 300)), "PNG"), {".txt": b"fills 12x20"})
    assert user_data.example("wide", wide, user_data.Sizing(grid, grid, 10**6)).image.shape == (12, 20, 3)


def test_bombs_and_images_over_max_pixels_are_too_large_from_their_header():
    def reason(data, max_pixels):
        try:
            user_data.example("x", Raw(data, {".txt": b"a caption"}), user_data.Sizing(((16, 16),), ((16, 16),),
                                                                                        max_pixels))
        except user_data.Skip as skip:
            return skip.reason
        return "kept"

    default = base.get_config().data.max_pixels
    assert reason(png_header(30000, 30000), default) == "too_large"  # over PIL's decompression-bomb limit
    assert reason(png_header(12000, 12000), default) == "too_large"  # under PIL's, over the default
    assert reason(png_header(12000, 12000), 12000**2) == "truncated"  # allowed, so decoded: it holds no pixels
    image = _encoded(Image.fromarray(_noise(40, 40)), "PNG")
    assert (reason(image, 40 * 40 - 1), reason(image, 40 * 40)) == ("too_large", "kept")
    with pytest.raises(ConfigError, match=r"max_pixels=100 is below data.resolution\*\*2=256"):
        validate(data_config("image_folder", "", "", max_pixels=100), 1)


def test_captions_with_a_byte_order_mark_a_lone_surrogate_or_deep_json():
    bom = "\ufeff"
    raw = Raw(b"", {".txt": (bom + "text").encode(), ".json": (bom + '{"short": "json"}').encode()},
              fields={"column": bom + " a column"})
    assert user_data.captions(raw) == {"caption": "text", "short": "json", "column": "a column"}
    with pytest.raises(user_data.Skip, match="caption_not_utf8"):  # JSON may escape what UTF-8 cannot hold
        user_data.captions(Raw(b"", {".json": b'{"caption": "\\udc80 half a pair"}'}))
    with pytest.raises(user_data.Skip, match="caption_not_json"):  # deeper than Python's stack
        user_data.captions(Raw(b"", {".json": b"[" * 100_000}))


def test_parquet_number_columns_are_captions_and_other_columns_are_counted(tmp_path):
    image = _encoded(Image.fromarray(_noise(20, 20)), "PNG")
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"image": [image, image], "caption": [7, None], "score": [0.5, 1.5],
                             "tags": [["a"], ["b"]], "text": ["a dog", "a cat"]}), tmp_path / "p" / "a.parquet")
    source = ParquetSource(data_config("parquet", tmp_path / "p", "").data)
    found = user_data.listing(source)
    assert found.ignored == {"a.parquet:tags": "column_not_text"}
    assert [r.fields for r in source.read(found.entries)] == [{"caption": "7", "score": "0.5", "text": "a dog"},
                                                               {"score": "1.5", "text": "a cat"}]


def _tar(entries) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in entries:
            info = tarfile.TarInfo(member)
            if isinstance(data, bytes):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:  # (type, linkname): a directory or a link
                info.type, info.linkname = data
                tar.addfile(info)
    return out.getvalue()


def test_tar_members_that_are_no_images_are_counted(tmp_path):
    image = _encoded(Image.fromarray(_noise(20, 20)), "PNG")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.tar").write_bytes(_tar([
        ("d", (tarfile.DIRTYPE, "")), ("d/a.png", image), ("d/a.txt", b"an image"), ("d/a.cls", b"3"),
        ("b.png", (tarfile.SYMTYPE, "d/a.png")), ("c.png", (tarfile.LNKTYPE, "d/a.png")),
        ("orphan.txt", b"no image"), (os.fsdecode(b"\xff.png"), image),
        (os.fsdecode(b"\xff.txt"), b"named in latin-1")]))
    (tmp_path / "s" / "notes.md").write_text("other files beside the shards count too")
    found = user_data.listing(WebDatasetSource(data_config("webdataset", tmp_path / "s", "").data))
    assert [e.key for e in found.entries] == ["d/a"]
    assert found.ignored == {"a.tar/d": "not_a_file", "a.tar/b.png": "not_a_file", "a.tar/c.png": "not_a_file",
                             "a.tar/d/a.cls": "other_file", "a.tar/orphan.txt": "orphan_caption",
                             "\\xff": "name_not_utf8", "notes.md": "other_file"}


def test_a_broken_shard_or_parquet_file_is_skipped_counted_and_named(tmp_path):
    image = _encoded(Image.fromarray(_noise(20, 20)), "PNG")
    shard = _tar([(f"{i}.{suffix}", data) for i in range(3) for suffix, data in (("png", image), ("txt", b"cap"))])
    first = len(_tar([("0.png", image)])) - 2 * tarfile.RECORDSIZE  # where the first member ends, unpadded
    (tmp_path / "s").mkdir()
    for name, data in {"good.tar": shard, "cut_in_a_member.tar": shard[:first + 600],
                       "cut_between_members.tar": shard[:1536], "compressed.tar": gzip.compress(shard),
                       "not_a_tar.tar": b"not a tar file " * 64}.items():
        (tmp_path / "s" / name).write_bytes(data)
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"image": [image] * 3, "caption": ["a", "b", "c"]}), tmp_path / "p" / "good.parquet")
    pq.write_table(pa.table({"image": pa.nulls(2), "caption": ["a", "b"]}), tmp_path / "p" / "null.parquet")
    (tmp_path / "p" / "cut.parquet").write_bytes((tmp_path / "p" / "good.parquet").read_bytes()[:300])
    shards = WebDatasetSource(data_config("webdataset", tmp_path / "s", "").data)
    assert user_data.listing(shards).ignored == {
        "compressed.tar": "file_unreadable", "cut_between_members.tar": "file_truncated",
        "cut_in_a_member.tar": "file_truncated", "not_a_tar.tar": "file_unreadable"}
    examples = load(shards, tmp_path / "data", num_validation=0)
    assert [(e.key, e.captions) for e in examples] == [(str(i), {"caption": "cap"}) for i in range(3)]
    report = json.loads(next((tmp_path / "data" / "user_data").glob("*.report.json")).read_text())
    assert report["files_skipped"] == user_data.listing(shards).ignored
    assert report["ignored"] == {"file_truncated": 2, "file_unreadable": 2}
    source = ParquetSource(data_config("parquet", tmp_path / "p", "").data)
    parquet = user_data.listing(source)
    assert [e.key for e in parquet.entries] == ["good.parquet/0", "good.parquet/1", "good.parquet/2"]
    assert parquet.ignored == {"cut.parquet": "file_unreadable", "null.parquet": "image_column_null"}
    good = (tmp_path / "p" / "good.parquet").read_bytes()
    (tmp_path / "p" / "good.parquet").write_bytes(good[:4] + b"\xff" * 16 + good[20:])  # a page header, not the footer
    assert [r.error for r in source.read(parquet.entries)] == ["unreadable"] * 3
