"""Every error is JSON ``{"error": ..., "message": ...}`` with the right status; never HTML or a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_response(status: int, error: str, message: str, **extra: Any) -> tuple[Response, int]:
    body = {"error": error, "message": message, **extra}
    return jsonify(body), status


def register_errorhandlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        name = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, name, exc.description or exc.name or "error")
        for header, value in exc.get_headers():  # e.g. a 405's Allow (RFC 9110), Retry-After
            if header.lower() != "content-type":
                response.headers[header] = value
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
