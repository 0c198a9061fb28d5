"""OpenTelemetry tracing for this process, configured by OpenTelemetry's own ``OTEL_*`` variables.

Off unless asked for: tracing starts when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``,
``console``) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the exporter is then ``otlp``), and stays off with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. When it is off nothing is hooked
anywhere (no Flask wrapper, no SQLAlchemy or redis listener, no broker middleware, no lookup in
the log formatter), so the hot paths cost what they cost without OpenTelemetry.

When on: OTLP over HTTP/protobuf (the SDK reads the endpoint, headers, timeout and batch
settings from their ``OTEL_*`` variables itself), ``OTEL_SERVICE_NAME`` (else the process's
default, ``device-api`` or ``device-worker``), ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``; ``parentbased_traceidratio``
with a ratio keeps whole traces: the worker follows the API's decision carried in
``traceparent``). Spans leave in batches from a background thread (a greenlet under gevent).

:func:`setup` runs once per process after any fork (the app factory in each gunicorn worker,
``worker.py``'s ``build_broker``), never at import: the exporter's thread would not survive a fork.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from broker import Broker
    from core.wiring import Clients

EXPORTERS = frozenset({"otlp", "console"})
SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
PROTOCOL = "http/protobuf"  # the lighter exporter; grpc is not installed
# polled by load balancers and Prometheus: a span each would drown the traces that matter
EXCLUDED_URLS = "/healthz,/readyz,/metrics"


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value this service cannot use (all problems in one message)."""


@dataclass(frozen=True)
class TracingConfig:
    enabled: bool = False
    exporters: tuple[str, ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    service_name: str | None = None


def tracing_config(environ: Mapping[str, str]) -> TracingConfig:
    """Read the ``OTEL_*`` variables that decide whether and how this process traces.

    Raises :class:`TracingConfigError` naming every bad value.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingConfig()
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names and endpoint:
        names = ["otlp"]
    if not names or names == ["none"]:
        return TracingConfig()
    problems = []
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        problems.append(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not available (use otlp, console or none)")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if "otlp" in names and protocol and protocol.strip() != PROTOCOL:
        problems.append(f"OTEL_EXPORTER_OTLP_PROTOCOL: only {PROTOCOL} is installed, not {protocol!r}")
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        problems.append(f"OTEL_TRACES_SAMPLER: {sampler!r} is not one of {', '.join(sorted(SAMPLERS))}")
    ratio = 1.0
    raw_arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if raw_arg and sampler.endswith("traceidratio"):
        try:
            ratio = float(raw_arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            problems.append(f"OTEL_TRACES_SAMPLER_ARG: {raw_arg!r} is not a ratio between 0 and 1")
    if problems:
        raise TracingConfigError("; ".join(problems))
    return TracingConfig(
        enabled=True,
        exporters=tuple(dict.fromkeys(names)),
        sampler=sampler,
        sampler_arg=ratio,
        service_name=environ.get("OTEL_SERVICE_NAME") or None,
    )


def make_sampler(config: TracingConfig) -> Sampler:
    """The sampler ``config`` names (the SDK's own classes)."""
    from opentelemetry.sdk.trace import sampling

    root: Sampler
    base = config.sampler.removeprefix("parentbased_")
    if base == "always_on":
        root = sampling.ALWAYS_ON
    elif base == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(config.sampler_arg)
    return sampling.ParentBased(root) if config.sampler.startswith("parentbased_") else root


def build_provider(config: TracingConfig, default_service_name: str) -> TracerProvider:
    """A tracer provider exporting to what ``config`` names, in batches."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({SERVICE_NAME: config.service_name or default_service_name})
    provider = TracerProvider(resource=resource, sampler=make_sampler(config))
    for name in config.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


# ---------------------------------------------------------------- this process's provider

_configured = False
_provider: TracerProvider | None = None


def setup(default_service_name: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Configure tracing for this process from the environment, once; later calls return the same.

    Returns the provider, or ``None`` when tracing is off. Raises :class:`TracingConfigError`.
    """
    global _configured, _provider
    if _configured:
        return _provider
    config = tracing_config(os.environ if environ is None else environ)
    provider = None
    if config.enabled:
        from opentelemetry import trace

        provider = build_provider(config, default_service_name)
        trace.set_tracer_provider(provider)
    use_provider(provider)
    return provider


def use_provider(provider: TracerProvider | None) -> None:
    """Make ``provider`` this process's (tests pass one with an in-memory exporter; ``None`` turns
    tracing off). Log lines carry trace ids exactly when there is a provider."""
    global _configured, _provider
    from core import logging as json_logging

    _configured, _provider = True, provider
    json_logging.include_trace_ids(provider is not None)


def reset() -> None:
    """Forget this process's configuration (tests): the next :func:`setup` reads the environment."""
    global _configured, _provider
    use_provider(None)
    _configured = False


# ---------------------------------------------------------------- hooks, installed only when on


def instrument_app(app: Flask, provider: TracerProvider) -> None:
    """A SERVER span per request (the official Flask instrumentation), health and metrics excluded."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS)


def instrument_clients(clients: Clients, provider: TracerProvider) -> None:
    """Spans for this process's PostgreSQL statements and Redis commands (statements without
    their parameters, Redis commands as ``SET ? ?``: no payload reaches a span)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrument_engine(clients.engine, provider)
    RedisInstrumentor.instrument_client(clients.redis, tracer_provider=provider)


def instrument_engine(engine: Any, provider: TracerProvider) -> None:
    """The official SQLAlchemy instrumentation's per-engine tracer, without its global patching of
    ``create_engine``. Its package declares ``sqlalchemy < 2.1`` (the project pins 2.1.9), so its
    instrumentor would refuse; the engine events it listens to are unchanged in 2.1, and
    tests/test_tracing.py and tests/broker/test_tracing.py check the spans."""
    from opentelemetry.instrumentation.sqlalchemy import __version__
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import get_tracer

    tracer = get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__, provider)
    meter = NoOpMeterProvider().get_meter("opentelemetry.instrumentation.sqlalchemy")
    usage = meter.create_up_down_counter("db.client.connections.usage", unit="connections")
    EngineTracer(tracer, engine, usage)


def trace_broker(broker: Broker, provider: TracerProvider) -> None:
    """Add the tracing middleware to ``broker``, first, unless it has one already."""
    from broker.middleware.tracing import Tracing

    if not any(isinstance(m, Tracing) for m in broker.middleware):
        broker.middleware.insert(0, Tracing(provider))
