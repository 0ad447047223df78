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
