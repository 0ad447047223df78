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


def _copy(small_phantom, tmp_path, n: int = 3):
    """A writable copy of the first ``n`` cases of the phantom (images copied)."""
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(small_phantom, folder, ignore=shutil.ignore_patterns("masks"))
    m = pd.read_csv(folder / "manifest.csv").head(n)
    m.to_csv(folder / "manifest.csv", index=False)
    return folder, m


def test_a_fifo_image_is_a_recorded_failure_not_a_hang(small_phantom, tmp_path):
    import os
    import threading

    folder, m = _copy(small_phantom, tmp_path)
    image = folder / m.loc[1, "image"]
    image.unlink()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    image.symlink_to(fifo)
    ds = load_dataset_folder(folder)
    box = {}
    worker = threading.Thread(target=lambda: box.update(ex=extract(
        build_encoder("test-histogram", "random", "cpu", None), "test-histogram", ds, ds.manifest)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked reader
        raise AssertionError("extraction blocked on a FIFO")
    ex = box["ex"]
    case = m.loc[1, "case_id"]
    assert list(ex.failures) == [case] and ex.extracted == 2
    assert str(image) in ex.failures[case] and "named pipe" in ex.failures[case]


def test_implausible_images_are_warned_per_case_and_kept_from_the_cache(small_phantom, tmp_path):
    import nibabel as nib

    folder, m = _copy(small_phantom, tmp_path)
    path = folder / m.loc[2, "image"]
    img = nib.load(path)
    scaled = (np.asarray(img.dataobj, dtype=np.float32) + 1024) / 4096  # normalised to [0, 1]
    nib.Nifti1Image(scaled, img.affine).to_filename(path)
    ds = load_dataset_folder(folder)
    enc = build_encoder("test-histogram", "random", "cpu", None)
    case = m.loc[2, "case_id"]
    for run in range(2):  # extracted, then from the cache: the warning is reported both times
        ex = extract(enc, "test-histogram", ds, ds.manifest)
        assert (ex.extracted, ex.cached) == ((3, 0) if run == 0 else (0, 3))
        assert list(ex.warnings) == [case] and not ex.failures
        assert "normalised data" in ex.warnings[case][0] and case in ex.features
