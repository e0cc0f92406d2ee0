"""How many devices contributed to a cohort's aggregate, in constant memory: HyperLogLog.

Why not a set of device ids: an aggregate is merged from many windows and stored in a snapshot;
a set grows with the fleet, while 2**10 one-byte registers (1 KiB, 1.4 KiB as base64) stay the
same for ten devices or a million, merge by an element-wise max (so merging is idempotent, and a
window counted twice counts once), and estimate the count with a standard error of
1.04 / sqrt(1024) ≈ 3.2 %.

Small counts (the first wave of a rollout, a class's canaries) are exact: up to `EXACT_LIMIT`
distinct keys the counter also keeps their 64-bit hashes (HyperLogLog++'s sparse idea, simplified),
so a gate reports 20 devices for 20 devices, not 19 (with registers alone two devices in one
register are indistinguishable: within one of the truth for only 99 % of sets of 20 and 89 % of 50,
measured over 3000 sets). Past the limit the hashes are dropped and the registers, always kept up
to date, take over; a merge stays exact while the union is within the limit.

Flajolet, Fusy, Gandouet and Meunier, "HyperLogLog: the analysis of a near-optimal cardinality
estimation algorithm" (2007); Heule, Nunkesser and Hall, "HyperLogLog in practice" (2013) for the
64-bit hash that makes the large-range correction unnecessary.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

PRECISION = 10  # index bits: 2**10 registers, standard error 1.04 / sqrt(2**10) ≈ 3.2 %
REGISTERS = 1 << PRECISION
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)
_HASH_BITS = 64
_REST_BITS = _HASH_BITS - PRECISION
MAX_RANK = _REST_BITS + 1  # all remaining bits zero
_ALPHA = 0.7213 / (1.0 + 1.079 / REGISTERS)  # the bias correction for m >= 128
# Distinct keys counted exactly (their hashes kept, 8 bytes each); beyond, the registers' estimate.
EXACT_LIMIT = 256


class DistinctCounter:
    """An estimate of how many distinct keys (device ids) were added; mergeable, serialisable.

    Register `j` holds the largest rank (position of the first 1 bit) seen among the hashes whose
    top `PRECISION` bits are `j`.
    """

    __slots__ = ("_exact", "_registers")
    __hash__ = None  # type: ignore[assignment]  # mutable: not usable as a dict key

    def __init__(self) -> None:
        self._registers: npt.NDArray[np.uint8] = np.zeros(REGISTERS, dtype=np.uint8)
        self._exact: set[int] | None = set()  # the keys' hashes while there are few; None beyond

    def add(self, key: str) -> None:
        """Count `key` (adding it again changes nothing)."""
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        if self._exact is not None:
            self._exact.add(h)
            if len(self._exact) > EXACT_LIMIT:
                self._exact = None
        index = h >> _REST_BITS
        rank = MAX_RANK - (h & ((1 << _REST_BITS) - 1)).bit_length()
        registers = self._registers
        if rank > registers[index]:
            registers[index] = rank

    def merge(self, other: DistinctCounter) -> None:
        """Count `other`'s keys too, in place: the result is the counter of the union."""
        np.maximum(self._registers, other._registers, out=self._registers)
        if self._exact is not None and other._exact is not None:
            self._exact |= other._exact
            if len(self._exact) > EXACT_LIMIT:
                self._exact = None
        else:
            self._exact = None

    def estimate(self) -> int:
        """The number of distinct keys: exact up to `EXACT_LIMIT`, else estimated (within ±3.2 %
        typically; see the module)."""
        if self._exact is not None:
            return len(self._exact)
        registers = self._registers
        empty = int(np.count_nonzero(registers == 0))
        raw = _ALPHA * REGISTERS * REGISTERS / float(np.sum(np.ldexp(1.0, -registers.astype(np.int32))))
        if raw <= 2.5 * REGISTERS and empty:
            return round(REGISTERS * math.log(REGISTERS / empty))
        return round(raw)

    def exact_hashes(self) -> list[int] | None:
        """The counted keys' hashes while the count is exact (sorted); None once it is an estimate."""
        return sorted(self._exact) if self._exact is not None else None

    @classmethod
    def from_hashes(cls, hashes: list[int]) -> DistinctCounter:
        """The exact counter of keys with these hashes (what `exact_hashes` returned).

        Raises:
            ValueError: more than `EXACT_LIMIT` hashes, or one that is not a 64-bit value.
        """
        if len(hashes) > EXACT_LIMIT:
            raise ValueError(f"an exact distinct counter holds at most {EXACT_LIMIT} hashes, got {len(hashes)}")
        counter = cls()
        for h in hashes:
            if not (isinstance(h, int) and 0 <= h < 1 << _HASH_BITS):
                raise ValueError(f"{h!r} is not a 64-bit hash")
            counter._exact.add(h)  # type: ignore[union-attr]  # a new counter is exact
            index = h >> _REST_BITS
            rank = MAX_RANK - (h & ((1 << _REST_BITS) - 1)).bit_length()
            counter._registers[index] = max(int(counter._registers[index]), rank)
        return counter

    def to_bytes(self) -> bytes:
        """The raw registers (`REGISTERS` bytes), e.g. to store base64 in a JSON snapshot; the
        counter they make again (`from_bytes`) is an estimate, even of few keys."""
        return self._registers.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DistinctCounter:
        """The counter `to_bytes` wrote.

        Raises:
            ValueError: not `REGISTERS` bytes, or a register over the largest possible rank.
        """
        if len(data) != REGISTERS:
            raise ValueError(f"a distinct counter is {REGISTERS} bytes of registers, got {len(data)}")
        registers = np.frombuffer(data, dtype=np.uint8).copy()
        if int(registers.max()) > MAX_RANK:
            raise ValueError(f"a register holds a rank over {MAX_RANK}: not a distinct counter")
        counter = cls()
        counter._registers = registers
        counter._exact = None
        return counter

    def to_sparse(self) -> list[list[int]]:
        """The non-empty registers as `[index, rank]` pairs: a few bytes for a counter of a few keys
        (a fold record's delta holds the devices of one batch), where the raw form is always 1 KiB."""
        indexes = np.flatnonzero(self._registers)
        return [[int(i), int(self._registers[i])] for i in indexes]

    @classmethod
    def from_sparse(cls, pairs: list[list[int]]) -> DistinctCounter:
        """The counter `to_sparse` wrote.

        Raises:
            ValueError: an index outside the registers, or a rank over the largest possible.
        """
        counter = cls()
        for index, rank in pairs:
            if not (0 <= index < REGISTERS and 0 <= rank <= MAX_RANK):
                raise ValueError(f"register {index} = {rank} cannot be part of a distinct counter")
            counter._registers[index] = rank
        counter._exact = None
        return counter

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistinctCounter):
            return NotImplemented
        return bool(np.array_equal(self._registers, other._registers)) and self._exact == other._exact

    def __repr__(self) -> str:
        return f"DistinctCounter(estimate={self.estimate()})"
