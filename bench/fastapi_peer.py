"""The architecture document's own API stack, as the benchmark's peer for ``GET /resource`` and
``POST /events``: FastAPI on uvicorn (uvloop, httptools), aiokafka, redis.asyncio, pydantic.

It does the document's work for the two measured paths, the way its documentation shows: a
bearer JWT verified with PyJWT (HS256, ``exp`` and ``sub`` required) and its roles checked, the
device scope of a device token, ``resource:{id}`` read from Redis and returned as JSON, the event
validated by a pydantic model, enriched with ``request_id``, ``user_id`` and a timestamp, sent
with ``send_and_wait`` (``acks="all"``, keyed by ``device_id``) and answered 202 once Kafka
acknowledged it, and one JSON log line per request (stdlib logging, to stderr). Not included,
because the benchmark does not measure them: the PostgreSQL read on a cache miss (a miss is a
404 here), rate limits, idempotency keys, metrics, load shedding.

Runs only in the benchmark's venv (requirements-bench.txt), started by ``bench/mixed.py``:

    uvicorn bench.fastapi_peer:app --workers 2 --loop uvloop --http httptools

Settings from the environment: ``JWT_SECRET``, ``REDIS_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``PEER_TOPIC`` (the benchmark gives it a scratch topic of its own).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jwt
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

SECRET = os.environ.get("JWT_SECRET", "local-dev-secret")
TOPIC = os.environ.get("PEER_TOPIC", "events-input")
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), **getattr(record, "fields", {})}  # fmt: skip
        return json.dumps(line)


handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(JsonFormatter())
log = logging.getLogger("peer.requests")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
    )
    await producer.start()
    state["producer"] = producer
    state["redis"] = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        yield
    finally:
        await producer.stop()
        await state["redis"].aclose()


app = FastAPI(lifespan=lifespan)
bearer = HTTPBearer()


@app.middleware("http")
async def request_log(request: Request, call_next):  # type: ignore[no-untyped-def]
    request.state.request_id = str(uuid.uuid4())
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["X-Request-ID"] = request.state.request_id
    duration = round((time.perf_counter() - started) * 1000, 2)
    fields = {"request_id": request.state.request_id, "method": request.method, "path": request.url.path,
              "status": response.status_code, "duration_ms": duration}  # fmt: skip
    log.info("request", extra={"fields": fields})
    return response


def claims(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> dict[str, Any]:
    try:
        return jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, "invalid token") from exc


def roles(*allowed: str):  # type: ignore[no-untyped-def]
    def check(token: Annotated[dict[str, Any], Depends(claims)]) -> dict[str, Any]:
        granted = token.get("roles") or []
        if not set(allowed).intersection(granted if isinstance(granted, list) else [granted]):
            raise HTTPException(403, "forbidden")
        return token

    return check


def in_scope(token: dict[str, Any], device_id: str) -> None:
    scope = {token["device_id"]} if isinstance(token.get("device_id"), str) else set(token.get("devices") or [])
    if "admin" not in (token.get("roles") or []) and scope and device_id not in scope:
        raise HTTPException(403, "this token may not act for this device")


class Event(BaseModel):
    device_id: str = Field(pattern=ID_PATTERN)
    payload: dict[str, Any]


@app.get("/resource/{resource_id}")
async def read_resource(
    resource_id: str, token: Annotated[dict[str, Any], Depends(roles("user", "device", "admin"))]
) -> Any:
    in_scope(token, resource_id)
    cached = await state["redis"].get(f"resource:{resource_id}")
    if cached is None:
        raise HTTPException(404, "not found")
    return json.loads(cached)


@app.post("/events", status_code=202)
async def post_event(
    event: Event, request: Request, token: Annotated[dict[str, Any], Depends(roles("device", "admin"))]
) -> dict[str, str]:
    in_scope(token, event.device_id)
    message = {"request_id": request.state.request_id, "device_id": event.device_id, "user_id": token["sub"],
               "received_at": dt.datetime.now(dt.UTC).isoformat(), "payload": event.payload}  # fmt: skip
    try:
        await state["producer"].send_and_wait(TOPIC, json.dumps(message).encode(), key=event.device_id.encode())
    except Exception as exc:
        raise HTTPException(503, "the event queue is unavailable") from exc
    return {"request_id": request.state.request_id, "status": "accepted"}


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
