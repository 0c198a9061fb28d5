"""gunicorn settings. Imports no application code: the app is built in each worker after fork."""

import hashlib
import multiprocessing
import os
import tempfile

# loopback unless told otherwise: the development JWT secret is public, so a development API
# reachable from the network hands out admin rights (the container sets BIND=0.0.0.0:8000)
bind = os.environ.get("BIND", "127.0.0.1:8000")
# gevent, plus a deadline on reading a request's head (HEADER_TIMEOUT, slowloris) and on its body
# (BODY_TIMEOUT, BODY_MIN_RATE; read before the app runs), the keep-alive turn (KEEPALIVE_TURNS) and
# JSON bodies for the errors gunicorn answers itself: core/gunicorn_worker.py
worker_class = "core.gunicorn_worker.HeaderDeadlineGeventWorker"
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


def _control_socket_path() -> str:
    """One control socket per instance (gunicorn's default, ~/.gunicorn/gunicorn.ctl, is shared
    by every gunicorn of the user, and each one's start or stop unlinks the others'): under the
    stack's run folder, named by the bound address; GUNICORN_CONTROL_SOCKET overrides it."""
    if os.environ.get("GUNICORN_CONTROL_SOCKET"):
        return os.environ["GUNICORN_CONTROL_SOCKET"]
    root = os.path.dirname(os.path.abspath(__file__))
    run_dir = os.path.join(os.environ.get("STACK_DIR", os.path.join(root, ".stack")), "run")
    name = "gunicorn-" + bind.replace(":", "-").replace("/", "_") + ".ctl"
    path = os.path.join(run_dir, name)
    if len(path) > 100:  # a unix socket path must fit in 108 bytes
        digest = hashlib.sha256(path.encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"gunicorn-{digest}.ctl")
    return path


control_socket = _control_socket_path()


def child_exit(server, worker):
    """Drop an exited worker's live gauges from the shared Prometheus directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
