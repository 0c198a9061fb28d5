"""The standing chaos suite: ``make chaos`` (``python -m tests.chaos.run``)."""
