# One image definition, two final targets: `api` (gunicorn + gevent on :8000) and `worker`
# (python worker.py). Both ECS services run images built from here:
#   docker build --target api    -t api-service:dev .
#   docker build --target worker -t worker-service:dev .

# ---- build: install the pinned dependencies into a virtualenv. Wheels wherever one exists (no
# compiler needed); psycogreen is published only as a source distribution (pure Python), so a
# wheel-only install (--only-binary=:all:) cannot work.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --prefer-binary -r /tmp/requirements.txt

# ---- runtime: the virtualenv and the code, run as an unprivileged user
FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    APP_ENV=production
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=app:app app/ app/
COPY --chown=app:app broker/ broker/
COPY --chown=app:app core/ core/
COPY --chown=app:app tasks/ tasks/
COPY --chown=app:app migrations/ migrations/
COPY --chown=app:app alembic.ini gunicorn.conf.py wsgi.py worker.py ./
USER app

FROM runtime AS worker
# SIGTERM drains (finish running messages, commit, leave the group); give the ECS task a
# stopTimeout above --shutdown-timeout.
STOPSIGNAL SIGTERM
CMD ["python", "worker.py", "run"]

FROM runtime AS api
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus BIND=0.0.0.0:8000 GUNICORN_CONTROL_SOCKET=/tmp/gunicorn.ctl
EXPOSE 8000
# the port gunicorn listens on (BIND), asked on loopback
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ['BIND'].rsplit(':', 1)[1]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"]
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec gunicorn -c gunicorn.conf.py wsgi:app"]
