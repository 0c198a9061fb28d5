"""The registered task functions (actors) that ``worker.py`` runs. Importing this package
declares them; ``core.runtime`` holds the per-process clients they use (engine, cache)."""

from tasks.events import process_event

__all__ = ["process_event"]
