"""``flask --app wsgi token --sub device-123 --roles device,user [--device ID | --devices A,B]``:
mint a local token."""

from __future__ import annotations

import datetime as dt

import click
import jwt as pyjwt
from flask import Flask

from app.services import settings


def register_commands(app: Flask) -> None:
    @app.cli.command("token")
    @click.option("--sub", required=True, help="the identity (JWT sub)")
    @click.option("--roles", default="device,user", show_default=True, help="comma-separated roles")
    @click.option("--ttl", default=3600, show_default=True, help="seconds until it expires")
    @click.option("--device", default="", help="device scope: the one device id this token acts for")
    @click.option("--devices", default="", help="device scope: comma-separated device ids")
    def token(sub: str, roles: str, ttl: int, device: str, devices: str) -> None:
        """Print a token signed with JWT_SECRET (HS* only), shaped like the architecture document's."""
        config = settings()
        if not config.jwt_algorithm.startswith("HS") or config.jwt_secret is None:  # settings require it for HS*
            raise click.ClickException("minting needs an HS* algorithm and JWT_SECRET")
        claims = {
            "sub": sub,
            "roles": [r.strip() for r in roles.split(",") if r.strip()],
            "iat": dt.datetime.now(dt.UTC),
            "exp": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl),
        }
        if device:
            claims["device_id"] = device
        if devices:
            claims["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
        click.echo(pyjwt.encode(claims, config.jwt_secret, algorithm=config.jwt_algorithm))
