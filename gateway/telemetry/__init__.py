"""Traces, metrics and spend rollups: built from each finished call's record, off the request
path (docs/telemetry.md)."""
