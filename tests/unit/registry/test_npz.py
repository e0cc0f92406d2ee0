"""Evaluation sets are measured from their headers before anything is inflated (services/registry/npz.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from services.registry import inspection, npz
from services.registry.errors import InvalidEvalSet
from shared.messages.registry import TensorSpec
from tests.unit.registry.npz_bombs import lying_header, many_members, zip_bomb

CAP = 4 * 1024**2
INPUT = [TensorSpec(name="input_ids", dtype="int64", shape=["batch"])]


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the registry gets as far as loading the arrays."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("np.load was called on an archive that should have been refused from its headers")

    monkeypatch.setattr(inspection.np, "load", refuse)


def test_a_zip_bomb_is_refused_from_its_declared_size_without_being_inflated(tmp_path: Path, no_loading: None) -> None:
    bomb = zip_bomb(tmp_path / "bomb.npz", inflated_bytes=16 * CAP)
    assert bomb.stat().st_size < CAP // 16, "the archive is small: only its inflated size is over the cap"
    with pytest.raises(InvalidEvalSet, match=f"decompresses to {16 * CAP + 128} bytes; the limit is {CAP}"):
        inspection.inspect_eval_set(bomb, digest="0" * 64, key="k", inputs=INPUT, max_decompressed_bytes=CAP)


def test_a_header_that_declares_more_than_its_member_holds_is_refused(tmp_path: Path, no_loading: None) -> None:
    liar = lying_header(tmp_path / "liar.npz", declared_shape=(10**12,))
    with pytest.raises(InvalidEvalSet, match=r"declares shape \[1000000000000\] of int64 .* holds 136 bytes"):
        inspection.inspect_eval_set(liar, digest="0" * 64, key="k", inputs=INPUT, max_decompressed_bytes=CAP)


def test_arrays_that_fit_their_members_but_not_the_cap_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros(300_000, dtype=np.int64), b=np.zeros(300_000, dtype=np.int64))
    with pytest.raises(InvalidEvalSet, match="the limit is 4194304"):
        npz.measure(path, max_members=64, max_bytes=CAP)


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path: Path, no_loading: None) -> None:
    path = many_members(tmp_path / "many.npz", members=65)
    with pytest.raises(InvalidEvalSet, match="has 65 members; the limit is 64 arrays"):
        inspection.inspect_eval_set(path, digest="0" * 64, key="k", inputs=INPUT, max_decompressed_bytes=CAP)


def test_object_arrays_and_non_npy_members_are_refused(tmp_path: Path) -> None:
    objects = tmp_path / "objects.npz"
    np.savez(objects, input_ids=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidEvalSet, match="holds Python objects"):
        npz.measure(objects, max_members=64, max_bytes=CAP)
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidEvalSet, match="'readme.txt' is not an .npy array"):
        npz.measure(other, max_members=64, max_bytes=CAP)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(InvalidEvalSet, match="no zip end record"):
        npz.measure(path, max_members=64, max_bytes=CAP)


def test_a_well_formed_set_is_measured_as_declared(eval_set: Path) -> None:
    members = {m.name: (m.shape, str(m.dtype), m.nbytes) for m in npz.measure(eval_set, max_members=64, max_bytes=CAP)}
    assert members["input_ids"] == ((32, 16), "int64", 32 * 16 * 8)
