"""Pieces shared by the API (``app/``) and the worker's tasks (``tasks/``): settings, logging, data layer."""
