"""A sink that keeps every call record, for in-process pipeline tests."""

from __future__ import annotations

from gateway.call import CallRecord


class Records:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)
