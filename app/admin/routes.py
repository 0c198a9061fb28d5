"""The operations console at ``/admin``: server-rendered pages for the admin role.

Overview (rates, retries, dead letters, lag and its age, charts over the last hour), the consumer
group (Kafka's members and the worker processes' own state), dead letters (filter, open, replay
selected or all matching, purge: each after a confirmation page, each with an audit log line) and
the actors' registry. Sign-in turns an admin JWT into a session (:mod:`app.admin.sessions`); every
form carries the session's CSRF token. No JavaScript; pages that change refresh themselves.

The views read the request, call :mod:`app.admin.data` for what a page shows (gathered from Kafka
and the workers' telemetry, shaped for the template) and render it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

import redis
from flask import Blueprint, Response, abort, g, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from app.admin import data
from app.admin.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SessionRefused,
    end_session,
    load_session,
    new_login_token,
    same_token,
    sign_in,
    sign_in_wait,
)
from app.auth import TokenRejected
from app.services import services, settings
from broker import get_broker
from broker.errors import BrokerError
from broker.telemetry import TelemetryReader
from core.wiring import telemetry_prefix

log = logging.getLogger(__name__)
audit = logging.getLogger("app.admin.audit")

blueprint = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static")

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


def _secure_cookies() -> bool:
    return request.is_secure or not settings().is_development


def _set_cookie(response: WerkzeugResponse, name: str, value: str, max_age: int) -> None:
    """The console's cookies: HttpOnly, SameSite=Strict, scoped to /admin, Secure outside
    development (and on HTTPS)."""
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="Strict", secure=_secure_cookies(), path="/admin"
    )


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


# ---------------------------------------------------------------- sign-in


@blueprint.get("/login")
def login() -> Response:
    token = new_login_token()
    response = make_response(render_template("admin/login.html", login_csrf=token, error=None))
    _set_cookie(response, LOGIN_COOKIE, token, max_age=600)
    return response


@blueprint.post("/login")
def login_submit() -> Any:
    request.max_content_length = LOGIN_FORM_MAX_BYTES  # before the form is read: larger is a 413
    # the form's own CSRF pair first: a forged or junk post is refused without using up the
    # address's sign-in attempts (behind a load balancer without PROXY_HOPS every client shares one)
    if not same_token(request.cookies.get(LOGIN_COOKIE), request.form.get("csrf")):
        abort(403, "the sign-in form's CSRF token is missing or wrong: reload the page and try again")
    config = settings()
    wait = sign_in_wait(services().redis, request.remote_addr or "unknown", config.admin_sign_in_per_minute)
    if wait:
        audit.warning("admin sign-in refused: too many attempts", extra={**_who(), "status": 429})
        error = f"Too many sign-in attempts from your address: try again in {wait} s."
        page = render_template("admin/login.html", login_csrf=request.cookies.get(LOGIN_COOKIE), error=error)
        return page, 429, {"Retry-After": str(wait)}
    try:
        session_id, session, lifetime = sign_in(
            services().redis, request.form.get("token", ""), config.admin_session_seconds
        )
    except (TokenRejected, SessionRefused) as exc:
        audit.warning("admin sign-in refused", extra={**_who(), "status": exc.status, "reason": str(exc)})
        token = request.cookies.get(LOGIN_COOKIE)
        return render_template("admin/login.html", login_csrf=token, error=str(exc)), exc.status
    audit.info("admin signed in", extra={**_who(), "audit": True, "admin": session.subject, "session_s": lifetime})
    response = redirect(url_for("admin.overview"))
    _set_cookie(response, SESSION_COOKIE, session_id, max_age=lifetime)
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


def _telemetry() -> TelemetryReader:
    return TelemetryReader(services().redis, prefix=telemetry_prefix(settings()))


@blueprint.get("/")
@signed_in
def overview() -> Any:
    return render_template("admin/overview.html", **data.overview(settings(), _telemetry()), refresh=5)


@blueprint.get("/group")
@signed_in
def group() -> Any:
    return render_template("admin/group.html", **data.group(settings(), _telemetry()), refresh=5)


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
        rows = data.dead_letters(settings(), services().redis, **filters)
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
    letter = data.dead_letter(settings(), services().redis, partition, offset)
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
        matching = data.dead_letters(settings(), services().redis, **filters)
        positions = [(row["dlq_partition"], row["dlq_offset"]) for row in matching][:MAX_POSITIONS]
    elif action == "purge":
        positions = []
    else:
        abort(400, "unknown action")
    if action != "purge" and not positions:
        return redirect(url_for("admin.dead_letters", **filters))
    if request.form.get("confirm") != "yes":
        plan = data.replay_plan(settings(), positions, data.declared_topics()) if positions else None
        return render_template("admin/confirm.html", action=action, positions=positions, filters=filters, plan=plan)
    if action == "purge":
        deleted = data.purge(settings(), services().redis)
        _audit("purged the dead-letter topic", deleted=deleted)
        message = f"Purged {deleted} dead letter(s)."
    else:
        sent, refused = data.replay(settings(), services().redis, positions, data.declared_topics())
        _audit("replayed dead letters", count=sent, refused=refused,
               positions=[f"{p}:{o}" for p, o in positions][:100], **filters)  # fmt: skip
        message = f"Replayed {sent} dead letter(s) to their topics."
        if refused:
            message += f" {refused} were not replayed: their topic is no declared actor's."
    return render_template("admin/done.html", message=message)


@blueprint.get("/actors")
@signed_in
def actors() -> Any:
    return render_template("admin/actors.html", registry=data.actor_registry())
