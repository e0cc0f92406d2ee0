"""What an `.npz` will cost to load, read from its headers before a byte is decompressed.

The size limit on the upload applies to the compressed file, and a few MiB of zeros deflate from
GiBs; numpy also allocates an array as large as its `.npy` header declares before reading its data.
So an evaluation set is measured first, from what the archive itself declares and nothing more:

1. the zip's end record: how many members and how large the central directory is, before
   `zipfile` parses that directory (it holds an object per member);
2. each member's declared uncompressed size (`zipfile` stops decompressing a member there, and
   fails on a CRC mismatch, so the declaration bounds what is inflated);
3. each member's `.npy` header: shape x dtype, which must fit in the member and, summed over the
   members, under the cap (`SLMOPS_REGISTRY_EVAL_SET_MAX_DECOMPRESSED_BYTES`); object arrays
   (pickles) are refused outright.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from services.registry.errors import InvalidEvalSet

MAX_CENTRAL_DIRECTORY_BYTES = 1024**2  # ~20,000 members' entries; an eval set has a few dozen
_END = b"PK\x05\x06"
_END_FORMAT = "<4s4H2LH"  # signature, disks, entries on disk, entries, directory size, offset, comment
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_FORMAT = "<4sQ2H2L4Q"


@dataclass(frozen=True, kw_only=True)
class Member:
    """One array of the archive, as its headers declare it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    nbytes: int


def measure(path: Path, *, max_members: int, max_bytes: int) -> list[Member]:
    """The archive's arrays as declared, once they are known to fit the caps.

    Raises:
        InvalidEvalSet: not a zip of `.npy` members, or over a cap (naming which and by how much).
    """
    entries, directory = _end_record(path)
    if entries > max_members:
        raise InvalidEvalSet(f"the evaluation set has {entries} members; the limit is {max_members} arrays")
    if directory > MAX_CENTRAL_DIRECTORY_BYTES:
        raise InvalidEvalSet(
            f"the archive's directory is {directory} bytes; the limit is {MAX_CENTRAL_DIRECTORY_BYTES}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > max_members:
                raise InvalidEvalSet(f"the evaluation set has {len(infos)} members; the limit is {max_members} arrays")
            declared = sum(i.file_size for i in infos)
            if declared > max_bytes:
                raise InvalidEvalSet(
                    f"the evaluation set decompresses to {declared} bytes; the limit is {max_bytes} "
                    "(SLMOPS_REGISTRY_EVAL_SET_MAX_DECOMPRESSED_BYTES)"
                )
            members = [_member(archive, info) for info in infos]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
        raise InvalidEvalSet(f"not a NumPy .npz archive: {exc}") from None
    total = sum(m.nbytes for m in members)
    if total > max_bytes:
        raise InvalidEvalSet(
            f"the evaluation set's arrays take {total} bytes; the limit is {max_bytes} "
            "(SLMOPS_REGISTRY_EVAL_SET_MAX_DECOMPRESSED_BYTES)"
        )
    return members


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    if not info.filename.endswith(".npy"):
        raise InvalidEvalSet(f"not a NumPy .npz archive: member {info.filename[:100]!r} is not an .npy array")
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as stream:
        try:
            version = npy_format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(stream)
            else:
                shape, _, dtype = npy_format.read_array_header_2_0(stream)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise InvalidEvalSet(f"array {name[:100]!r} has no valid .npy header: {str(exc)[:200]}") from None
    if any(d < 0 for d in shape):
        raise InvalidEvalSet(f"array {name[:100]!r} declares a negative dimension: {list(shape)}")
    if dtype.hasobject:
        raise InvalidEvalSet(f"array {name[:100]!r} holds Python objects; evaluation sets hold numbers only")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise InvalidEvalSet(
            f"array {name[:100]!r} declares shape {list(shape)} of {dtype} ({nbytes} bytes) "
            f"but its member holds {info.file_size} bytes"
        )
    return Member(name=name, shape=tuple(shape), dtype=dtype, nbytes=nbytes)


def _end_record(path: Path) -> tuple[int, int]:
    """(members, central directory bytes) as the zip's end record (or its zip64 form) declares."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_len = min(size, struct.calcsize(_END_FORMAT) + 0xFFFF)  # the record plus the longest comment
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(_END)
        if at < 0 or len(tail) - at < struct.calcsize(_END_FORMAT):
            raise InvalidEvalSet("not a NumPy .npz archive: it has no zip end record")
        fields = struct.unpack(_END_FORMAT, tail[at : at + struct.calcsize(_END_FORMAT)])
        entries, directory = fields[4], fields[5]
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] == _ZIP64_LOCATOR:
            (offset,) = struct.unpack("<Q", locator[8:16])
            f.seek(offset)
            record = f.read(struct.calcsize(_ZIP64_END_FORMAT))
            if len(record) < struct.calcsize(_ZIP64_END_FORMAT):
                raise InvalidEvalSet("not a NumPy .npz archive: its zip64 end record is truncated")
            zip64 = struct.unpack(_ZIP64_END_FORMAT, record)
            entries, directory = max(entries, zip64[7]), max(directory, zip64[8])
    return entries, directory
