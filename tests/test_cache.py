import numpy as np

from ctbench.cache import FeatureCache, content_hash
from ctbench.types import Features


def test_round_trip_and_atomic(tmp_path):
    cache = FeatureCache("m", "random", "prep1", root=tmp_path)
    f = Features(np.arange(5, dtype=np.float32), np.ones((2, 3, 4, 5)), np.eye(4) * 2)
    path = cache.put("ab" * 32, f, {"case_id": "c1"})
    assert cache.has("ab" * 32) and path.parent.name == "ab"
    got = cache.get("ab" * 32)
    np.testing.assert_array_equal(got.embedding, f.embedding)
    assert got.tokens.dtype == np.float16 and got.tokens.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(got.token_affine, np.eye(4) * 2)
    assert cache.get("ab" * 32, tokens=False).tokens is None
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_content_hash_tracks_bytes_not_names(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"xyz")
    b.write_bytes(b"xyz")
    assert content_hash(a) == content_hash(b)
    b.write_bytes(b"xyZ")
    assert content_hash(a) != content_hash(b)
    d = tmp_path / "series"
    d.mkdir()
    (d / "1.dcm").write_bytes(b"one")
    h1 = content_hash(d)
    (d / "2.dcm").write_bytes(b"two")
    assert content_hash(d) != h1


# -- damaged entries: moved aside, never fatal, nothing valid lost ------------------------------

import json  # noqa: E402
import struct  # noqa: E402

import pytest  # noqa: E402

from ctbench.errors import CTBenchError  # noqa: E402

KEY = "cd" * 32


def _entry(tmp_path, tokens: bool = True):
    cache = FeatureCache("m", "random", "prep1", root=tmp_path)
    feats = Features(np.arange(6, dtype=np.float32), np.ones((2, 2, 2, 2)) if tokens else None,
                     np.eye(4) if tokens else None)
    return cache, cache.put(KEY, feats)


def _header_len(path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


@pytest.mark.parametrize("cut", ["empty", "in-length", "in-header", "in-data", "last-byte"])
def test_a_truncated_entry_is_moved_aside_with_its_bytes(tmp_path, caplog, cut):
    cache, path = _entry(tmp_path)
    full = path.read_bytes()
    n = {"empty": 0, "in-length": 5, "in-header": _header_len(path) // 2,
         "in-data": (_header_len(path) + len(full)) // 2, "last-byte": len(full) - 1}[cut]
    path.write_bytes(full[:n])
    with caplog.at_level("WARNING", logger="ctbench"):
        moved = cache.recover(KEY)
    assert moved is not None and moved.parent == path.parent
    assert moved.name.startswith(path.name + ".corrupt-")
    assert moved.read_bytes() == full[:n]  # kept as it was, for inspection
    assert not cache.has(KEY)
    assert str(path) in caplog.text and str(moved) in caplog.text and "re-extracted" in caplog.text


def test_garbage_wrong_layout_and_foreign_entries_are_moved_aside(tmp_path):
    cache, path = _entry(tmp_path)
    full = path.read_bytes()
    path.write_bytes(b"\0" * len(full))  # zero-filled after a power loss
    assert "header" in cache.problem(KEY) and cache.recover(KEY)
    path.write_bytes(full[:8] + b"{not json" + full[17:])
    assert "JSON" in cache.problem(KEY) and cache.recover(KEY)
    other = FeatureCache("other-model", "random", "prep1", root=tmp_path)
    other.dir = cache.dir  # a file of another model copied into this folder
    other.put(KEY, Features(np.ones(6)))
    assert "other-model" in cache.problem(KEY) and cache.recover(KEY)
    cache.put(KEY, Features(np.ones(6)))
    n = _header_len(path)
    raw = bytearray(path.read_bytes())
    begin = n + json.loads(raw[8:n])["embedding"]["data_offsets"][0]
    raw[begin:begin + 4] = np.float32(np.nan).tobytes()
    path.write_bytes(bytes(raw))
    assert "non-finite" in cache.problem(KEY) and cache.recover(KEY)
    assert len(list(path.parent.glob(path.name + ".corrupt-*"))) == 4  # four distinct names, none lost


def test_valid_entries_are_never_touched(tmp_path):
    for tokens in (True, False):
        cache, path = _entry(tmp_path / str(tokens), tokens)
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        assert cache.problem(KEY) is None and cache.recover(KEY) is None
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert cache.recover("ef" * 32) is None  # absent: nothing to do


def test_reading_a_damaged_entry_names_it_and_moves_it_aside(tmp_path):
    cache, path = _entry(tmp_path)
    header = json.loads(path.read_bytes()[8:_header_len(path)])
    assert header["embedding"]["dtype"] == "F32"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CTBenchError) as err:
        cache.get(KEY)
    assert str(path) in str(err.value) and "run the command again" in str(err.value)
    assert not path.exists() and len(list(path.parent.glob("*.corrupt-*"))) == 1


def test_extraction_re_extracts_a_damaged_entry_and_records_it(small_phantom, tmp_path):
    from ctbench.datasets import load_dataset_folder
    from ctbench.extract import cache_for, extract
    from tests.fakes import HistogramEncoder

    ds = load_dataset_folder(small_phantom)
    cases = ds.manifest.head(3)
    enc = HistogramEncoder()
    first = extract(enc, "test-histogram", ds, cases, workers=0)
    cache = cache_for(enc, "test-histogram")
    files = sorted(cache.dir.rglob("*.safetensors"))
    assert len(files) == 3 and first.recovered == {}
    good = {f: f.read_bytes() for f in files}
    files[1].write_bytes(good[files[1]][:100])
    again = extract(enc, "test-histogram", ds, cases, workers=0)
    assert again.extracted == 1 and again.cached == 2 and not again.failures
    (case_id, moved), = again.recovered.items()
    assert moved.startswith(str(files[1]) + ".corrupt-") and case_id in set(cases.case_id)
    assert {f: f.read_bytes() for f in files} == good  # rewritten identical; the others untouched
    np.testing.assert_array_equal(again.features[case_id].embedding, first.features[case_id].embedding)
