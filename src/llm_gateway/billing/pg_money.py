"""The money hot path on PostgreSQL: group commit.

Every reservation and settlement of this process goes through one writer
task and one asyncpg connection. While a batch is in flight, new operations
queue; the next batch takes them all in one call of ``gw_money_batch`` (a
stored function, migration 0004): one round trip and one commit for however
many requests arrived meanwhile, instead of one commit each on the user's
row. Under load the hot row sees a few hundred commits a second, not
thousands; at one request at a time a reservation is still one round trip.

Failures:
- The database unreachable: a reservation fails at once with 503
  ``database_unavailable`` (after the first failure no request waits for a
  connection timeout) until a background probe connects again.
- A settlement is never dropped: it waits in memory and is retried until the
  database takes it; past ``journal_after`` waiting, and at shutdown, the
  rest go to a journal file (``journal.py``) that the next start replays.
  Replays and retries are idempotent: each charge has its ledger entry id,
  which the database checks before charging (migration 0006: a retry whose
  reservation is gone is still charged, unless that entry exists).
- Open reservations are renewed while their process lives, so a short
  ``reservation_ttl_s`` releases the holds of a process that died, without
  ever releasing one in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from llm_gateway.billing.journal import Journal
from llm_gateway.db.errors import CONNECTION_ERRORS, database_unavailable
from llm_gateway.db.types import utcnow

log = logging.getLogger("llm_gateway.billing")

_BATCH = ("SELECT gw_money_batch($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], "
          "$7::boolean[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12, $13)")
_RENEW = "UPDATE reservations SET expires_at = $1 WHERE id = ANY($2::text[])"

MAX_BATCH = 500  # operations per call
LANES = 2  # connections, each with at most one batch in flight


@dataclass(slots=True)
class Settlement:
    """A charge owed: release hold ``hold_id`` and charge ``cost`` nano-dollars."""

    hold_id: str
    user_id: str
    cost: int
    entry_id: str
    request_id: str
    key_id: str | None
    # An earlier attempt may have committed (its connection broke mid-call).
    # Kept in journals and sent for 0004's function; since 0006 the ledger
    # entry id alone decides.
    retry: bool = False
    done: asyncio.Future[int] | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "user_id": self.user_id, "cost": self.cost, "entry_id": self.entry_id,
                "request_id": self.request_id, "key_id": self.key_id, "retry": self.retry}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Settlement:
        return cls(str(record["hold_id"]), str(record["user_id"]), int(record["cost"]), str(record["entry_id"]),
                   str(record["request_id"]), record.get("key_id"), bool(record.get("retry", True)))


@dataclass(slots=True)
class _Reservation:
    hold_id: str
    user_id: str
    key_id: str | None
    amount: int
    done: asyncio.Future[bool]


class PgMoney:
    def __init__(
        self, connect: dict[str, Any], *, ttl_s: float, journal: Journal, journal_after: int = 10_000,
        retry_s: float = 0.25, lanes: int = LANES,
    ) -> None:
        self._connect_args = connect
        self._ttl = timedelta(seconds=ttl_s)
        self._renew_every = max(ttl_s / 3, 0.5)
        self._journal = journal
        self._journal_after = journal_after
        self._retry_s = retry_s
        self._lanes = lanes
        self._conns: list[asyncpg.Connection[Any] | None] = [None] * lanes
        self._reserves: list[_Reservation] = []
        self._settles: list[Settlement] = []
        self._sending = 0  # settlements in a batch in flight
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._down = False  # the last attempt to reach the database failed
        self.live: dict[str, None] = {}  # open holds of this process, renewed until settled
        self._renewed_at = 0.0
        self._closing = False
        self.round_trips = 0  # batches sent: one round trip and one commit each
        self._replaying: set[str] = set()  # entry ids of journalled charges not yet committed

    # --------------------------------------------------------------- api

    def start(self) -> None:
        for record in self._journal.claim():
            self._settles.append(Settlement.from_record(record))
        self._replaying = {s.entry_id for s in self._settles}
        if self._settles:
            log.warning("replaying %d charges from the money journal", len(self._settles))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(lane)) for lane in range(self._lanes)]
        if self._settles:
            self._wake.set()

    @property
    def owed(self) -> int:
        """Settlements waiting for the database."""
        return len(self._settles) + self._sending

    async def reserve(self, hold_id: str, user_id: str, key_id: str | None, amount: int) -> bool:
        """Hold ``amount`` nano-dollars of the user's free balance: True, or
        False when it does not fit. 503 when the database is unreachable."""
        if not self._tasks:
            self.start()
        if self._down:
            raise database_unavailable()
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._reserves.append(_Reservation(hold_id, user_id, key_id, amount, done))
        self._wake.set()
        taken = await done
        if taken:
            self.live[hold_id] = None
        return taken

    def settle(self, settlement: Settlement) -> asyncio.Future[int]:
        """Queue a settlement; the future gives what was charged (nano-dollars)
        once committed. The charge stays owed until then, whoever waits."""
        if not self._tasks:
            self.start()
        self.live.pop(settlement.hold_id, None)
        settlement.done = asyncio.get_running_loop().create_future()
        self._settles.append(settlement)
        self._wake.set()
        return settlement.done

    async def aclose(self, wait_s: float = 5.0) -> None:
        """Commit what is owed (for up to ``wait_s`` while the database is
        down), journal the rest, and close."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            # The lanes end by themselves once nothing is owed; cancelling is
            # the fallback (a cancel racing a wake-up can be lost in wait_for).
            everything = asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(everything), wait_s)
            while not everything.done():
                for task in self._tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(everything), 1.0)
        if self._settles:
            self._journal.write([s.record() for s in self._settles])
            self._journal.release_claimed()  # what they held is in the new file
            log.error("%d charges could not reach the database before shutdown; kept in the money journal (%s)",
                      len(self._settles), self._journal.folder)
            self._settles.clear()
        for lane in range(self._lanes):
            await self._disconnect(lane)

    # ------------------------------------------------------------- lanes
    # Each lane is a task with a connection of its own. A lane takes whatever
    # is queued when it is free, so while one batch is in flight the next
    # one can already be sent on another lane: batches overlap instead of
    # queueing behind each other (batches touching one user still serialise
    # on the user's row lock, in the database). At one request at a time
    # only one lane is busy.

    async def _run(self, lane: int) -> None:
        try:
            await self._loop(lane)
        finally:
            conn, self._conns[lane] = self._conns[lane], None
            if conn is not None:
                conn.terminate()

    async def _loop(self, lane: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            idle = not self._reserves and not self._settles
            if idle and self._closing:
                return
            # While the database is down, lane 0 keeps trying to connect even
            # with nothing owed: reservations are refused until it does.
            if idle and not (self._down and lane == 0):
                renewal_due = lane == 0 and self.live and loop.time() - self._renewed_at >= self._renew_every
                if not renewal_due:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._renew_every)
                    continue
            try:
                conn = self._conns[lane]
                if conn is None or conn.is_closed():
                    conn = self._conns[lane] = await asyncpg.connect(**self._connect_args)
                elif self._down:
                    await conn.execute("SELECT 1")  # another lane lost its connection: is this one alive?
                if self._down:
                    log.info("database reachable again; %d charges owed", self.owed)
                    self._down = False
                if loop.time() - self._renewed_at >= self._renew_every:
                    self._renewed_at = loop.time()
                    if self.live:
                        await conn.execute(_RENEW, utcnow() + self._ttl, list(self.live))
                if self._reserves or self._settles:
                    await self._batch(conn)
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self._on_down(lane, exc)
                await asyncio.sleep(self._retry_s)
            except Exception:
                log.exception("money batch failed; retrying")
                await self._disconnect(lane)
                await asyncio.sleep(self._retry_s)

    async def _batch(self, conn: Any) -> None:
        reserves, self._reserves = self._reserves[:MAX_BATCH], self._reserves[MAX_BATCH:]
        settles, self._settles = self._settles[:MAX_BATCH], self._settles[MAX_BATCH:]
        self._sending += len(settles)
        now = utcnow()
        self.round_trips += 1
        try:
            out = await conn.fetchval(
                _BATCH,
                [s.hold_id for s in settles], [s.user_id for s in settles], [s.cost for s in settles],
                [s.entry_id for s in settles], [s.request_id for s in settles], [s.key_id for s in settles],
                [s.retry for s in settles],
                [r.hold_id for r in reserves], [r.user_id for r in reserves], [r.key_id for r in reserves],
                [r.amount for r in reserves], now + self._ttl, now)
        except BaseException as exc:
            # Unanswered: it may have committed. Reservations are refused (one
            # that did commit is released by the sweep, never renewed);
            # settlements go back to the front of the queue, marked as maybe
            # done unless the server said the statement failed.
            for r in reserves:  # undecided: refused as the database's (503), never a 500
                if not r.done.done():
                    r.done.set_exception(database_unavailable())
            if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, CONNECTION_ERRORS):
                for s in settles:
                    s.retry = True
            self._settles[:0] = settles
            raise
        finally:
            self._sending -= len(settles)
        if self._replaying:
            self._replaying.difference_update(s.entry_id for s in settles)
            if not self._replaying:
                self._journal.release_claimed()
                log.info("money journal replayed")
        for s, charged in zip(settles, out[:len(settles)], strict=True):
            if s.done is not None and not s.done.done():
                s.done.set_result(max(int(charged), 0) if charged >= 0 else -1)
        for r, taken in zip(reserves, out[len(settles):], strict=True):
            if not r.done.done():
                r.done.set_result(taken == 1)

    def _on_down(self, lane: int, exc: BaseException) -> None:
        if not self._down:
            log.error("database unreachable (%s): refusing requests that need a reservation; %d charges owed, "
                      "kept and retried", type(exc).__name__, self.owed)
        self._down = True
        for r in self._reserves:
            if not r.done.done():
                r.done.set_exception(database_unavailable())
        self._reserves.clear()
        if len(self._settles) > self._journal_after:
            spill = self._settles[:len(self._settles) - self._journal_after]
            self._journal.write([s.record() for s in spill])
            self._replaying.difference_update(s.entry_id for s in spill)
            del self._settles[:len(spill)]
            log.error("%d charges moved to the money journal (%s) while the database is down", len(spill),
                      self._journal.folder)
        conn, self._conns[lane] = self._conns[lane], None
        if conn is not None:
            conn.terminate()

    async def _disconnect(self, lane: int) -> None:
        conn, self._conns[lane] = self._conns[lane], None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1.0)
            if not conn.is_closed():
                conn.terminate()
