"""How a message's envelope becomes a record's bytes (Dramatiq's ``Encoder``, ``set_encoder``).

The default is JSON, the envelope of :mod:`broker.message` byte for byte. Another encoder (a
faster JSON, MessagePack) is set once per process, before anything is sent or consumed, and the
same in every producer and worker: records already in Kafka are read with the encoder of the
reader. There is no pickle encoder: anyone able to write to a topic could then run code in the
workers.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Encoder", "JSONEncoder", "get_encoder", "set_encoder"]


class Encoder:
    """Turns the envelope (a dict of JSON-like values) into bytes and back.

    ``encode`` raises ``TypeError`` or ``ValueError`` for values it cannot carry; ``decode``
    raises ``ValueError`` (or ``TypeError``) for bytes it cannot read. The message module turns
    them into :class:`~broker.errors.EncodeError` and :class:`~broker.errors.DecodeError`.
    """

    def encode(self, data: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError


class JSONEncoder(Encoder):
    """UTF-8 JSON, compact, no NaN or infinities (other languages' parsers refuse them)."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def encode(self, data: dict[str, Any]) -> bytes:
        return self._encoder.encode(data).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


_encoder: Encoder = JSONEncoder()


def get_encoder() -> Encoder:
    """The process's encoder (JSON unless :func:`set_encoder` chose another)."""
    return _encoder


def set_encoder(encoder: Encoder) -> None:
    """Use ``encoder`` for every message this process sends and reads from now on."""
    global _encoder
    _encoder = encoder
