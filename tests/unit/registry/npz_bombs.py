"""Hostile evaluation sets, written without holding what they claim in memory (helpers, not tests)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

CHUNK = 1024**2


def zip_bomb(path: Path, *, inflated_bytes: int, name: str = "input_ids") -> Path:
    """A real .npz bomb: one int64 array of zeros, `inflated_bytes` large once loaded, deflated to
    about a thousandth of that. Written in 1 MiB chunks, so the test never holds the array."""
    count = inflated_bytes // 8
    header = {"descr": npy_format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False, "shape": (count,)}
    zeros = bytes(CHUNK)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
            npy_format.write_array_header_2_0(member, header)
            left = count * 8
            while left > 0:
                member.write(zeros[: min(CHUNK, left)])
                left -= CHUNK
    return path


def lying_header(path: Path, *, declared_shape: tuple[int, ...], name: str = "input_ids") -> Path:
    """An .npz whose .npy header declares `declared_shape` of int64 but holds 8 bytes of data:
    numpy would allocate the declared array before noticing."""
    header = {"descr": npy_format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False, "shape": declared_shape}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(f"{name}.npy", "w") as member:
            npy_format.write_array_header_1_0(member, header)
            member.write(bytes(8))
    return path


def many_members(path: Path, *, members: int) -> Path:
    """An .npz of `members` one-element arrays."""
    np.savez(path, **{f"a{i}": np.zeros(1, dtype=np.int64) for i in range(members)})
    return path
