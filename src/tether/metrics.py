"""The process's Prometheus metrics (prometheus-client), in one registry that `GET /metrics`
renders. Defined here, below every layer, so each counts what it does without knowing the
others: the HTTP front (api/observe.py), turns and queue waits (engine/turn.py), the upstream
(upstream/client.py), compaction (engine/compact.py), tool calls (engine/toolstep.py), the
store (store/sqlite_db.py), the view cache (engine/deps.py). Labels are route templates and
statuses, never ids: nothing of a tenant's shows."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry()
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

REQUESTS = Counter(
    "tether_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "tether_http_request_seconds",
    "Time to answer a request, to its last byte (a stream: until it ends)",
    ["route", "method"],
    buckets=_SLOW,
    registry=REGISTRY,
)
TURNS = Counter("tether_turns", "Turns ended, by status", ["status"], registry=REGISTRY)
QUEUE_SECONDS = Histogram(
    "tether_queue_wait_seconds",
    "Time a turn waited for its conversation's lock",
    buckets=(*_FAST, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "tether_upstream_seconds",
    "Upstream calls: a JSON completion to its body, a stream to its end",
    ["kind"],
    buckets=_SLOW,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "tether_upstream_errors",
    "Upstream calls that failed, by error code",
    ["code"],
    registry=REGISTRY,
)
COMPACTIONS = Counter(
    "tether_compactions", "Checkpoints made, by kind (summary, prune)", ["kind"], registry=REGISTRY
)
TOKENS_SAVED = Counter(
    "tether_compaction_tokens_saved",
    "Tokens the checkpoints took out of the views",
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "tether_tool_calls", "Server tool calls, by how they ended", ["status"], registry=REGISTRY
)
STORE_SECONDS = Histogram(
    "tether_store_seconds",
    "Store operations (a read or a write transaction), including the wait for a connection",
    ["op"],
    buckets=_FAST,
    registry=REGISTRY,
)
VIEW_CACHE = Counter(
    "tether_view_cache_lookups",
    "Lookups of a conversation's view in memory, by result (hit, miss)",
    ["result"],
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
