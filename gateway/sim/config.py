"""Simulator settings: what each simulated model costs in time, capacity and money."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SimModel(_Strict):
    """One served model on one tier; every replica of it gets its own slots and KV cache.

    Times are for a single request on an idle replica at speed 1.0 and time_scale 1.0.
    """

    name: str
    kind: Literal["chat", "embedding"] = "chat"
    tier: str = "fp16"
    replicas: int = Field(1, ge=1, le=64)
    slots: int = Field(8, ge=1)
    kv_blocks: int = Field(4096, ge=1)
    block_tokens: int = Field(16, ge=1)
    prefill_ms_per_token: float = Field(0.25, ge=0)
    decode_ms_per_token: float = Field(20.0, ge=0)
    decode_batch_penalty: float = Field(0.04, ge=0)
    speed: float = Field(1.0, gt=0)
    input_price_per_mtok: float = Field(0.0, ge=0)
    output_price_per_mtok: float = Field(0.0, ge=0)
    dimensions: int = Field(256, ge=1)
    # Embeddings: `random` (a vector per distinct text: equal texts alike, all else unrelated)
    # or `lexical` (from shared words: paraphrases score high; sim/text.py).
    embedding: Literal["random", "lexical"] = "random"
    default_max_tokens: int = Field(64, ge=1)
    # Prompt tokens the model's chat template adds to every chat call (Llama 3.1's default
    # system preamble alone is ~25), reported in usage as a real engine would.
    template_tokens: int = Field(0, ge=0, le=10_000)
    max_model_len: int = Field(131_072, ge=16)
    # The share of answers identical to what a fidelity-1.0 model (the reference tier) says to
    # the same request with the same seed; the rest differ (a tier made bad on purpose, for the
    # quality guard's tests and demos).
    fidelity: float = Field(1.0, ge=0, le=1)


class Faults(_Strict):
    """Injected failures, for tests: errors, extra latency, streams cut mid-way."""

    error_rate: float = Field(0.0, ge=0, le=1)
    error_statuses: tuple[int, ...] = (429, 500, 503)
    added_latency_ms: float = Field(0.0, ge=0)
    drop_rate: float = Field(0.0, ge=0, le=1)


class SimBatch(_Strict):
    """The simulator's OpenAI Batch API: a job waits `completion_delay_seconds` (scaled by
    time_scale) before its lines run; `failure_rate` of its lines fail (as a vendor's do); the
    vendor's batch `discount`, listed with the models for whoever prices the results."""

    completion_delay_seconds: float = Field(2.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    discount: float = Field(0.5, ge=0, lt=1)


class SimConfig(_Strict):
    time_scale: float = Field(1.0, ge=0)
    seed: int = 0
    models: tuple[SimModel, ...] = Field(min_length=1)
    faults: Faults = Faults()
    batch: SimBatch = SimBatch()
