"""gunicorn settings. Imports no application code: the app is built in each worker after fork."""

import multiprocessing
import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Every connection holds a slot, idle keep-alives included. Greenlets are cheap (a few KB), so
# give each worker far more slots than it will ever have requests in flight: behind an ALB the
# load balancer reuses a few connections per target; exposed directly, 1,000 slots per worker
# outlast hundreds of idle clients (tests/api/test_live_stack.py). Requests beyond the DB pool
# wait for a connection (pool_timeout), they do not take a slot from newcomers.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
timeout = 30
graceful_timeout = 20
keepalive = 75  # above the ALB's 60 s idle timeout, so the ALB closes first
preload_app = False
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"


def child_exit(server, worker):
    """Drop an exited worker's live gauges from the shared Prometheus directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
