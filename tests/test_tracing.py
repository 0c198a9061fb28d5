"""core.tracing: OTEL_* configuration, sampling, and nothing installed while tracing is off."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from core import logging as json_logging
from core import tracing
from core.tracing import TracingConfig, TracingConfigError, tracing_config


@pytest.fixture
def keep_global_broker():
    """create_app makes its broker the global one: give the next tests theirs back."""
    from broker import set_broker
    from broker.broker import _global_broker_or_none

    previous = _global_broker_or_none()
    yield
    if previous is not None:
        set_broker(previous)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "api", "OTEL_TRACES_SAMPLER": "always_on"},  # named, but no exporter
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_tracing_is_off_unless_an_exporter_or_an_endpoint_is_configured(environ):
    assert tracing_config(environ) == TracingConfig(enabled=False)


def test_an_endpoint_alone_turns_on_otlp_with_the_standard_defaults():
    config = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "api-eu"})
    assert config == TracingConfig(True, ("otlp",), "parentbased_always_on", 1.0, "api-eu")


def test_parent_based_ratio_sampling_reads_its_argument():
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "otlp,console",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert (config.exporters, config.sampler, config.sampler_arg) == (
        ("otlp", "console"),
        "parentbased_traceidratio",
        0.25,
    )
    assert "TraceIdRatioBased{0.25}" in tracing.make_sampler(config).get_description()


def test_bad_values_are_refused_at_start_all_in_one_error():
    with pytest.raises(TracingConfigError) as caught:
        tracing_config(
            {
                "OTEL_TRACES_EXPORTER": "zipkin",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            }
        )
    message = str(caught.value)
    assert "zipkin" in message and "OTEL_TRACES_SAMPLER_ARG" in message
    with pytest.raises(TracingConfigError, match="only http/protobuf"):
        tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_SAMPLER"):
        tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"})


def _sampled_roots(sampler_name: str, arg: str, n: int = 2000) -> int:
    config = tracing_config(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": sampler_name, "OTEL_TRACES_SAMPLER_ARG": arg}
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.make_sampler(config))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for _ in range(n):
        tracer.start_span("root").end()
    return len(exporter.get_finished_spans())


def test_ratio_sampling_keeps_about_its_share_of_new_traces():
    assert _sampled_roots("parentbased_traceidratio", "0") == 0
    assert _sampled_roots("parentbased_traceidratio", "1") == 2000
    assert 300 < _sampled_roots("parentbased_traceidratio", "0.25") < 700  # 500 expected; ±9 sigma


@pytest.mark.parametrize("parent_sampled", [True, False])
def test_parent_based_sampling_follows_the_incoming_decision_whatever_the_ratio(parent_sampled):
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0",
        }
    )
    provider = TracerProvider(sampler=tracing.make_sampler(config))
    flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT)
    parent = NonRecordingSpan(SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, flags))
    span = provider.get_tracer("tests").start_span("child", context=set_span_in_context(parent))
    assert span.get_span_context().trace_flags.sampled is parent_sampled


def test_setup_reads_the_environment_once_per_process():
    try:
        assert tracing.setup("device-api", {}) is None
        assert json_logging._current_span is None  # the log formatter does no lookup
        # configured already: a later call with tracing asked for does not start a second provider
        assert tracing.setup("device-api", {"OTEL_TRACES_EXPORTER": "console"}) is None
    finally:
        tracing.reset()


def test_with_tracing_off_the_app_and_its_clients_have_no_hooks(settings, keep_global_broker):
    from app import create_app
    from app.services import services as app_services
    from broker import StubBroker

    tracing.reset()
    stub = StubBroker()
    app = create_app(settings, broker=stub)
    try:
        services = app_services(app)
        assert getattr(app.wsgi_app, "__func__", None) is type(app).wsgi_app  # no WSGI wrapper around the app
        assert not app.before_request_funcs.get(None) or all(
            "opentelemetry" not in f.__module__ for f in app.before_request_funcs[None]
        )
        listeners = [*services.engine.dispatch.before_cursor_execute, *services.engine.dispatch.after_cursor_execute]
        assert all("opentelemetry" not in getattr(f, "__module__", "") for f in listeners)
        assert not getattr(services.redis, "_is_instrumented_by_opentelemetry", False)
        assert all(type(m).__name__ != "Tracing" for m in stub.middleware)
        assert json_logging._current_span is None
    finally:
        tracing.reset()
        services.engine.dispose()


def test_log_lines_carry_the_active_spans_ids_only_while_tracing_is_on(traced):
    line = io.StringIO()
    handler = logging.StreamHandler(line)
    handler.setFormatter(json_logging.JsonLineFormatter())
    log = logging.getLogger("tests.tracing")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("outside")
        with traced.tracer.start_as_current_span("work") as span:
            log.warning("inside")
        tracing.use_provider(None)
        with traced.tracer.start_as_current_span("work"):
            log.warning("tracing off")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    outside, inside, off = (json.loads(x) for x in line.getvalue().splitlines())
    assert "trace_id" not in outside and "trace_id" not in off
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"


def test_with_tracing_on_the_same_checks_see_every_hook(settings, traced, keep_global_broker):
    """The control for the test above: its checks do see the hooks when they are there."""
    from app import create_app
    from app.services import services as app_services
    from broker import StubBroker

    stub = StubBroker()
    app = create_app(settings, broker=stub)
    services = app_services(app)
    try:
        assert getattr(app.wsgi_app, "__func__", None) is not type(app).wsgi_app
        listeners = list(services.engine.dispatch.before_cursor_execute)
        assert any("opentelemetry" in getattr(f, "__module__", "") for f in listeners)
        assert services.redis._is_instrumented_by_opentelemetry
        assert type(stub.middleware[0]).__name__ == "Tracing"
        assert json_logging._current_span is not None
    finally:
        services.engine.dispose()


def test_the_worker_entry_point_puts_tracing_first_and_instruments_the_tasks_clients(settings, traced):
    """worker.py's build_broker (nothing connects while building)."""
    import worker
    from core import runtime

    try:
        previous = runtime.clients()
    except RuntimeError:
        previous = None
    import logging as std_logging

    root = std_logging.getLogger()
    handlers, level = list(root.handlers), root.level
    broker = worker.build_broker(settings)  # it configures logging too
    try:
        names = [type(m).__name__ for m in broker.middleware]
        assert names[0] == "Tracing"  # first: it sees the retry decision
        # after-hooks run in reverse: the time limit is disarmed before Telemetry writes to Redis
        assert names.index("Telemetry") < names.index("TimeLimit")
        clients = runtime.clients()
        assert clients.redis._is_instrumented_by_opentelemetry
        listeners = list(clients.engine.dispatch.before_cursor_execute)
        assert any("opentelemetry" in getattr(f, "__module__", "") for f in listeners)
    finally:
        runtime.clients().engine.dispose()
        broker.close()
        if previous is not None:
            runtime.configure(previous)
        root.handlers[:] = handlers
        root.setLevel(level)
