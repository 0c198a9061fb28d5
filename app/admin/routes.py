"""The operations console at ``/admin``: server-rendered pages for the admin role.

Overview (rates, retries, dead letters, lag and its age, charts over the last hour), the consumer
group (Kafka's members and the worker processes' own state), dead letters (filter, open, replay
selected or all matching, purge: each after a confirmation page, each with an audit log line) and
the actors' registry. Sign-in turns an admin JWT into a session (:mod:`app.admin.sessions`); every
form carries the session's CSRF token. No JavaScript; pages that change refresh themselves.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import redis
from flask import Blueprint, Response, abort, g, make_response, redirect, render_template, request, url_for

from app.admin import data
from app.admin.charts import line_chart
from app.admin.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SessionRefused,
    end_session,
    load_session,
    same_token,
    start_session,
)
from app.auth import TokenRejected, verify_admin_token
from app.services import services, settings
from broker import get_broker
from broker.errors import BrokerError
from broker.telemetry import TelemetryReader
from core.settings import Settings
from core.wiring import telemetry_prefix

log = logging.getLogger(__name__)
audit = logging.getLogger("app.admin.audit")

blueprint = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static")

STALE_SAMPLE_S = 30  # older lag samples mean no worker samples: the console measures the age itself
LOGIN_FORM_MAX_BYTES = 16 * 1024  # a token and a CSRF value; providers' JWTs run to a few KB
MAX_POSITIONS = 500  # dead letters one action replays at most
MAX_PARTITION = 2**31 - 1  # Kafka's partition and offset ranges (int32, int64)
MAX_OFFSET = 2**63 - 1
MAX_SINCE_HOURS = 24 * 366
_POSITION = re.compile(r"([0-9]{1,10}):([0-9]{1,19})")  # ASCII digits only: "²".isdigit() is True
SHOWN_DEAD_LETTERS = 200  # newest first; "replay all matching" covers the rest too
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@blueprint.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blueprint.errorhandler(BrokerError)
def kafka_unavailable(exc: BrokerError) -> Any:
    """An action or page that needs Kafka while it does not answer: say so, as a page."""
    log.warning("console: Kafka did not answer", extra={"error": str(exc), "path": request.path})
    return render_template("admin/done.html", message=f"Kafka did not answer: {exc}. Nothing was changed."), 503


@blueprint.errorhandler(redis.RedisError)
def redis_unavailable(exc: redis.RedisError) -> Any:
    """Sessions and telemetry live in Redis: while it does not answer, the console says so."""
    log.warning("console: Redis did not answer", extra={"error": str(exc), "path": request.path})
    return render_template("admin/done.html", message="Redis did not answer: try again shortly."), 503


def _settings() -> Settings:
    return settings()


def _secure_cookies() -> bool:
    return request.is_secure or not _settings().is_development


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for a signed-in admin; a POST must also carry the session's CSRF token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = load_session(services().redis, request.cookies.get(SESSION_COOKIE))
        if session is None:
            return redirect(url_for("admin.login"))
        if request.method == "POST" and not same_token(session.csrf, request.form.get("csrf")):
            audit.warning("admin request refused: CSRF token missing or wrong", extra={**_who(), "path": request.path})
            abort(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        g.admin = session
        return view(*args, **kwargs)

    return wrapper


def _audit(action: str, **fields: Any) -> None:
    audit.info("admin action", extra={**_who(), "audit": True, "action": action, "admin": g.admin.subject, **fields})


def _who() -> dict[str, Any]:
    """What every audit line names: the request (its X-Request-ID) and the client's address."""
    return {"request_id": g.get("request_id", ""), "client": request.remote_addr or "unknown"}


def _sign_in_throttled() -> int:
    """Seconds until this client may try to sign in again (0: now): ``ADMIN_SIGN_IN_PER_MINUTE``
    attempts per client address, counted in Redis a fixed minute at a time. Guessing a token is
    hopeless anyway; this keeps a flood of sign-ins from costing a verification each."""
    client = hashlib.sha256((request.remote_addr or "unknown").encode()).hexdigest()
    key = f"admin:sign-in:{client}"
    pipe = services().redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 60, nx=True)
    pipe.pttl(key)
    attempts, _, ttl_ms = pipe.execute()
    return max(1, math.ceil(ttl_ms / 1000)) if attempts > _settings().admin_sign_in_per_minute else 0


# ---------------------------------------------------------------- sign-in


@blueprint.get("/login")
def login() -> Response:
    token = secrets.token_urlsafe(32)
    response = make_response(render_template("admin/login.html", login_csrf=token, error=None))
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="Strict", secure=_secure_cookies(), path="/admin"
    )
    return response


@blueprint.post("/login")
def login_submit() -> Any:
    request.max_content_length = LOGIN_FORM_MAX_BYTES  # before the form is read: larger is a 413
    # the form's own CSRF pair first: a forged or junk post is refused without using up the
    # address's sign-in attempts (behind a load balancer without PROXY_HOPS every client shares one)
    if not same_token(request.cookies.get(LOGIN_COOKIE), request.form.get("csrf")):
        abort(403, "the sign-in form's CSRF token is missing or wrong: reload the page and try again")
    wait = _sign_in_throttled()
    if wait:
        audit.warning("admin sign-in refused: too many attempts", extra={**_who(), "status": 429})
        error = f"Too many sign-in attempts from your address: try again in {wait} s."
        page = render_template("admin/login.html", login_csrf=request.cookies.get(LOGIN_COOKIE), error=error)
        return page, 429, {"Retry-After": str(wait)}
    try:
        claims = verify_admin_token(request.form.get("token", "").strip())
        session_id, session, lifetime = start_session(services().redis, claims, _settings().admin_session_seconds)
    except (TokenRejected, SessionRefused) as exc:
        status = exc.status if isinstance(exc, TokenRejected) else 401
        audit.warning("admin sign-in refused", extra={**_who(), "status": status, "reason": str(exc)})
        token = request.cookies.get(LOGIN_COOKIE)
        return render_template("admin/login.html", login_csrf=token, error=str(exc)), status
    audit.info("admin signed in", extra={**_who(), "audit": True, "admin": session.subject, "session_s": lifetime})
    response = redirect(url_for("admin.overview"))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=lifetime,
        httponly=True,
        samesite="Strict",
        secure=_secure_cookies(),
        path="/admin",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


@blueprint.post("/logout")
@signed_in
def logout() -> Any:
    end_session(services().redis, request.cookies.get(SESSION_COOKIE))
    _audit("signed out")
    response = redirect(url_for("admin.login"))
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# ---------------------------------------------------------------- pages


def _reader() -> TelemetryReader:
    return TelemetryReader(services().redis, prefix=telemetry_prefix(_settings()))


def _topics() -> list[str]:
    return sorted(get_broker().get_declared_topics())


@blueprint.get("/")
@signed_in
def overview() -> Any:
    reader = _reader()
    workers = reader.workers()
    retrying: dict[str, int] = {}
    for worker in workers:
        for actor, n in (worker.get("retrying_by_actor") or {}).items():
            retrying[actor] = retrying.get(actor, 0) + n
    rows, _ = data.actor_rates(reader, retrying)
    actors = get_broker().actors
    for row in rows:
        row["topic"] = actors[row["actor"]].topic if row["actor"] in actors else "\u2013"
        row["charts"] = [
            line_chart(row["series"]["processed"], label="processed", unit="/s"),
            line_chart(row["series"]["failed"], label="failed", unit="/s"),
        ]
    lag, lag_error = None, None
    latest = reader.latest_lag()
    try:
        lag = data.live_lag(_settings(), _topics())
        if latest is None or time.time() - latest.get("at", 0) > STALE_SAMPLE_S:  # no worker samples it now
            lag["oldest_age_s"] = data.oldest_age(lag)
            latest = lag
            reader.record_lag({**lag, "workers": len(workers)})
    except BrokerError as exc:
        lag_error = str(exc)
    totals, ages, per_partition = data.lag_series(reader)
    processes, scaling = data.worker_series(reader)
    if lag:
        for p in lag["partitions"]:
            series = per_partition.get(f"{p['topic']}-{p['partition']}", [])
            p["chart"] = line_chart(series, label="lag", unit="") if series else ""
    return render_template(
        "admin/overview.html",
        rows=rows,
        lag=lag,
        lag_error=lag_error,
        oldest_age_s=(latest or {}).get("oldest_age_s"),
        lag_chart=line_chart(totals, label="total lag", unit=" records"),
        age_chart=line_chart(ages, label="oldest unprocessed", unit=" s"),
        workers_chart=line_chart(
            processes, label="worker processes", marks=[e["index"] for e in scaling] if scaling else ()
        ),
        scaling_events=[{**e, "at": time.strftime("%H:%M:%S", time.gmtime(e["at"]))} for e in reversed(scaling[-10:])],
        workers=workers,
        retrying_total=sum(w.get("retrying", 0) for w in workers),
        refresh=5,
    )


@blueprint.get("/group")
@signed_in
def group() -> Any:
    members, error = [], None
    try:
        described = data.describe_group(_settings().kafka_consumer_group)
        members = described["members"]
        state = described["state"]
    except BrokerError as exc:
        state, error = "unknown", str(exc)
    return render_template(
        "admin/group.html",
        group=_settings().kafka_consumer_group,
        state=state,
        members=members,
        workers=_reader().workers(),
        error=error,
        refresh=5,
    )


def _filters() -> dict[str, Any]:
    source = request.form if request.method == "POST" else request.args
    try:
        since = float(source.get("since_hours") or 0)
    except ValueError:
        since = 0.0
    if not (math.isfinite(since) and 0 <= since <= MAX_SINCE_HOURS):
        since = 0.0
    page = source.get("page", "")
    return {
        "actor": source.get("actor", "").strip()[:200],
        "error": source.get("error", "").strip()[:200],
        "since_hours": since,
        "page": int(page) if page.isascii() and page.isdigit() and len(page) <= 6 else 0,
    }


@blueprint.get("/dead-letters")
@signed_in
def dead_letters() -> Any:
    filters = _filters()
    rows, error = [], None
    try:
        rows = data.dead_letters(_settings(), services().redis, **filters)
    except BrokerError as exc:
        error = str(exc)
    actors = sorted(get_broker().actors)
    return render_template(
        "admin/dead_letters.html",
        rows=rows[:SHOWN_DEAD_LETTERS],
        matching=len(rows),
        filters=filters,
        actors=actors,
        error=error,
        older=url_for("admin.dead_letters", **{**filters, "page": filters["page"] + 1}),
    )


@blueprint.get("/dead-letters/<int:partition>/<int:offset>")
@signed_in
def dead_letter(partition: int, offset: int) -> Any:
    if partition > MAX_PARTITION or offset > MAX_OFFSET:
        abort(404, "no such dead letter (purged, or never there)")
    letter = data.dead_letter(_settings(), services().redis, partition, offset)
    if letter is None:
        abort(404, "no such dead letter (purged, or never there)")
    _audit("viewed a dead letter", partition=partition, offset=offset)
    return render_template("admin/dead_letter.html", letter=letter)


def _positions(values: list[str]) -> list[tuple[int, int]]:
    """``partition:offset`` strings as positions: ASCII digits within Kafka's ranges, at most
    MAX_POSITIONS of them; anything else is a 400."""
    if len(values) > MAX_POSITIONS:
        abort(400, f"select at most {MAX_POSITIONS} dead letters at a time")
    positions = []
    for value in values:
        match = _POSITION.fullmatch(value)
        if match is None or int(match.group(1)) > MAX_PARTITION or int(match.group(2)) > MAX_OFFSET:
            abort(400, f"not a dead letter position: {value[:40]!r}")
        positions.append((int(match.group(1)), int(match.group(2))))
    return sorted(set(positions))


@blueprint.post("/dead-letters/action")
@signed_in
def dead_letter_action() -> Any:
    """Replay selected, replay all matching the filter, or purge: first a confirmation page, then
    (with ``confirm=yes``) the action itself."""
    action = request.form.get("action")
    filters = _filters()
    if action == "replay-selected":
        positions = _positions(request.form.getlist("selected"))
    elif action == "replay-matching":
        matching = data.dead_letters(_settings(), services().redis, **filters)
        positions = [(row["dlq_partition"], row["dlq_offset"]) for row in matching][:MAX_POSITIONS]
    elif action == "purge":
        positions = []
    else:
        abort(400, "unknown action")
    if action != "purge" and not positions:
        return redirect(url_for("admin.dead_letters", **filters))
    if request.form.get("confirm") != "yes":
        plan = data.replay_plan(_settings(), positions, _topics()) if positions else None
        return render_template("admin/confirm.html", action=action, positions=positions, filters=filters, plan=plan)
    if action == "purge":
        deleted = data.purge(_settings(), services().redis)
        _audit("purged the dead-letter topic", deleted=deleted)
        message = f"Purged {deleted} dead letter(s)."
    else:
        sent, refused = data.replay(_settings(), services().redis, positions, _topics())
        _audit("replayed dead letters", count=sent, refused=refused,
               positions=[f"{p}:{o}" for p, o in positions][:100], **filters)  # fmt: skip
        message = f"Replayed {sent} dead letter(s) to their topics."
        if refused:
            message += f" {refused} were not replayed: their topic is no declared actor's."
    return render_template("admin/done.html", message=message)


@blueprint.get("/actors")
@signed_in
def actors() -> Any:
    registry = []
    for actor in sorted(get_broker().actors.values(), key=lambda a: a.actor_name):
        options = {name: _describe_option(value) for name, value in sorted(actor.options.items())}
        registry.append(
            {
                "name": actor.actor_name,
                "topic": actor.topic,
                "options": options,
                "batch": actor.batch_size if getattr(actor, "batch_fn", None) else None,
                "doc": (actor.__doc__ or "").strip().split("\n\n")[0],
            }
        )
    return render_template("admin/actors.html", registry=registry)


def _describe_option(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(_describe_option(v) for v in value)
    if isinstance(value, type):
        return value.__qualname__
    if callable(value):
        return f"{getattr(value, '__qualname__', type(value).__name__)}()"
    return str(value)
