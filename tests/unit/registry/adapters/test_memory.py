"""The registry's in-memory record store (services/registry/adapters/memory.py) keeps the KV store's contract."""

from __future__ import annotations

import pytest

from services.registry.adapters.memory import MemoryRecordStore
from tests.unit.registry.adapters.record_store_contract import RecordStoreContract


class TestMemoryRecordStore(RecordStoreContract):
    @pytest.fixture
    def records(self) -> MemoryRecordStore:
        return MemoryRecordStore()
