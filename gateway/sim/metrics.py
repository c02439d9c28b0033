"""Prometheus exposition with vLLM's metric names, read from replica state at scrape time
(so the request path only bumps plain integers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.sim.engine import Histogram, Replica

_LABELS = ["model_name", "replica", "tier"]


class ReplicaCollector(Collector):
    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._replicas = tuple(replicas)

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Requests currently in a batch slot.", labels=_LABELS
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Requests queued for a batch slot.", labels=_LABELS
        )
        kv_usage = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1).", labels=_LABELS
        )
        queries = CounterMetricFamily(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            labels=_LABELS,
        )
        hits = CounterMetricFamily(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", labels=_LABELS
        )
        prompt = CounterMetricFamily(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels=_LABELS
        )
        generation = CounterMetricFamily(
            "vllm:generation_tokens", "Tokens generated.", labels=_LABELS
        )
        success = CounterMetricFamily(
            "vllm:request_success", "Finished requests.", labels=[*_LABELS, "finished_reason"]
        )
        aborted = CounterMetricFamily(
            "vllm:request_aborted",
            "Requests abandoned by the client before finishing.",
            labels=_LABELS,
        )
        config = GaugeMetricFamily(
            "vllm:cache_config_info",
            "KV cache configuration (as vLLM reports it).",
            labels=[*_LABELS, "block_size", "num_gpu_blocks"],
        )
        ttft = _histograms("vllm:time_to_first_token_seconds", "Time to first token.")
        e2e = _histograms("vllm:e2e_request_latency_seconds", "End-to-end request latency.")
        for replica in self._replicas:
            labels = [replica.model.name, str(replica.index), replica.model.tier]
            s = replica.stats
            running.add_metric(labels, s.running)
            waiting.add_metric(labels, s.waiting)
            kv_usage.add_metric(labels, replica.cache.usage)
            size = [str(replica.model.block_tokens), str(replica.model.kv_blocks)]
            config.add_metric([*labels, *size], 1.0)
            queries.add_metric(labels, s.prefix_queries)
            hits.add_metric(labels, s.prefix_hits)
            prompt.add_metric(labels, s.prompt_tokens)
            generation.add_metric(labels, s.generation_tokens)
            aborted.add_metric(labels, s.aborted)
            for reason, count in sorted(s.finished.items()):
                success.add_metric([*labels, reason], count)
            _add_histogram(ttft, labels, s.ttft)
            _add_histogram(e2e, labels, s.e2e)
        yield from (
            running,
            waiting,
            kv_usage,
            queries,
            hits,
            prompt,
            generation,
            success,
            aborted,
            config,
            ttft,
            e2e,
        )


def _histograms(name: str, doc: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=_LABELS)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*h.buckets, float("inf")), h.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    family.add_metric(labels, buckets, h.total)


def render(replicas: Iterable[Replica]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector(list(replicas)))
    return generate_latest(registry)
