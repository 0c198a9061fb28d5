"""The HTTP benchmark's baselines under the project's gunicorn settings: a bare Flask route
returning a small JSON dict, and the same route verifying an HS256 JWT with PyJWT first."""

import os

import jwt
from flask import Flask, abort, request

SECRET = os.environ.get("JWT_SECRET", "local-dev-secret")

plain = Flask("bare")


@plain.get("/ping")
def ping() -> dict:
    return {"status": "ok", "n": 1}


with_jwt = Flask("bare_jwt")


@with_jwt.get("/ping")
def ping_jwt() -> dict:
    header = request.headers.get("Authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        abort(401)
    return {"status": "ok", "sub": claims["sub"]}
