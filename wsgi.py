"""gunicorn entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

gevent must patch the standard library before anything imports kafka-python (which captures
``selectors.DefaultSelector`` at import) or psycopg2, so this module patches first.
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()

from app import create_app  # noqa: E402
from core.logging import configure_logging  # noqa: E402
from core.settings import load_settings  # noqa: E402

settings = load_settings()
configure_logging(settings.log_level)
app = create_app(settings)
