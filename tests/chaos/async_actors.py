"""An ``async def`` actor for the chaos suite, loaded by ``worker.py`` beside ``tasks``
(``worker.py run tasks tests.chaos.async_actors``; see :class:`tests.chaos.system.System`).

Why: the suite's ledger (nothing acknowledged lost, nothing stored twice) should hold for an
async actor under the same faults as for the sync ``process_event``; an async actor's message
runs on the worker process's event loop thread (:mod:`broker.asyncio`), so a SIGKILL lands
while the coroutine is suspended, between its awaits, and its offset must not have been
committed by then.

The actor stores its ledger id in :data:`TABLE` (created by the harness, primary key the id), so
a redelivered message changes nothing but the row's ``deliveries`` count. It runs on its own
topic, :data:`TOPIC`, which the harness creates if missing.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, text

from broker import actor
from core import runtime

TOPIC = "chaos-async"
TOPIC_PARTITIONS = 3
TABLE = "chaos_async_messages"
ACTOR_NAME = "chaos_store_async"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ledger_id text PRIMARY KEY,
    run_id text NOT NULL,
    deliveries integer NOT NULL DEFAULT 1,
    stored_at timestamptz NOT NULL DEFAULT now()
)
"""


def create_table(engine: Engine) -> None:
    """The actor's table, if it does not exist yet (the harness calls this before a run)."""
    with engine.begin() as conn:
        conn.execute(text(CREATE_TABLE))


def _store(engine: Engine, run_id: str, ledger_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {TABLE} (ledger_id, run_id) VALUES (:id, :run) "
                f"ON CONFLICT (ledger_id) DO UPDATE SET deliveries = {TABLE}.deliveries + 1"
            ),
            {"id": ledger_id, "run": run_id},
        )


@actor(
    actor_name=ACTOR_NAME,
    topic=TOPIC,
    max_retries=3,
    min_backoff=2000,
    max_backoff=60000,
    key=lambda run_id, ledger_id: ledger_id,
)
async def store_async(run_id: str, ledger_id: str) -> None:
    """Store ``ledger_id`` once (idempotent: a redelivery only counts itself in ``deliveries``).

    The awaits are real: the coroutine yields to the loop before and while the write runs (in a
    thread, as the engine is synchronous), so a kill can land with the coroutine suspended."""
    await asyncio.sleep(0)
    await asyncio.to_thread(_store, runtime.clients().engine, run_id, ledger_id)
