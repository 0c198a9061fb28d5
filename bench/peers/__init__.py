"""The peers of the task benchmark, the same no-op INCR task on Dramatiq and on Celery, both with
Redis as the broker. Installed only for `make bench` (requirements-bench.txt, its own venv)."""
