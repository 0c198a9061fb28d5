"""The operations console (``/admin``): see :mod:`app.admin.routes`."""

from app.admin.routes import blueprint

__all__ = ["blueprint"]
