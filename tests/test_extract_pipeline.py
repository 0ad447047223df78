"""Extraction with reader workers: preprocessing moves into the workers, features do not change."""

import numpy as np
import pandas as pd

from ctbench.datasets import load_dataset_folder
from ctbench.extract import extract
from ctbench.readers import read_volume
from ctbench.runner import build_encoder


def test_workers_and_prepare_give_the_features_of_encode(small_phantom, tmp_path, monkeypatch):
    ds = load_dataset_folder(small_phantom)
    cases = ds.manifest.head(4)
    enc = build_encoder("voxelfm", "random", "cpu", "tiny")
    calls = {"prepared": 0}
    real = type(enc).encode_prepared

    def counting(self, items):
        calls["prepared"] += len(items)
        return real(self, items)

    monkeypatch.setattr(type(enc), "encode_prepared", counting)
    ex = extract(enc, "voxelfm", ds, cases, tokens=True, workers=1, batch_size=2)
    assert ex.extracted == 4 and not ex.failures and calls["prepared"] == 4
    for row in cases.itertuples():
        direct = enc.encode(read_volume(ds.resolve(row.image)))
        got = ex.features[row.case_id]
        np.testing.assert_allclose(got.embedding, direct.embedding, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.token_affine, direct.token_affine)
    again = extract(enc, "voxelfm", ds, cases, workers=1)
    assert again.cached == 4 and again.extracted == 0


def test_a_broken_case_in_a_worker_is_recorded(small_phantom, tmp_path):
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(small_phantom, folder)
    m = pd.read_csv(folder / "manifest.csv").head(3)
    (folder / m.loc[1, "image"]).write_bytes(b"not a nifti")
    m.to_csv(folder / "manifest.csv", index=False)
    ds = load_dataset_folder(folder)
    ex = extract(build_encoder("voxelfm", "random", "cpu", "tiny"), "voxelfm", ds, ds.manifest, workers=1)
    assert list(ex.failures) == [m.loc[1, "case_id"]] and ex.extracted == 2
    assert "corrupt" in ex.failures[m.loc[1, "case_id"]] or "truncated" in ex.failures[m.loc[1, "case_id"]]
