"""Everything a running gateway holds, created in the app's lifespan and
reached from requests through ``request.app.state.gateway`` — no globals."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from llm_gateway.auth import bootstrap
from llm_gateway.auth.authenticator import Authenticator, Refusal
from llm_gateway.auth.cache import TTLCache
from llm_gateway.auth.credentials import hash_secret
from llm_gateway.auth.external import ExternalJWTVerifier
from llm_gateway.auth.invalidation import InvalidationBus
from llm_gateway.auth.principal import Principal
from llm_gateway.auth.throttle import LoginThrottle
from llm_gateway.auth.tokens import TokenService
from llm_gateway.billing.ledger import Ledger
from llm_gateway.billing.usage import UsageWriter
from llm_gateway.cache import ResponseCache
from llm_gateway.db.engine import Database
from llm_gateway.db.migrate import SchemaOutOfDate, ensure_schema
from llm_gateway.db.responses import ResponseStore
from llm_gateway.ids import RequestIds
from llm_gateway.limits import Limiter
from llm_gateway.observability.observer import Observer
from llm_gateway.pipeline import Pipeline
from llm_gateway.providers.base import Provider
from llm_gateway.providers.registry import build_provider
from llm_gateway.redis_watch import RedisWatch
from llm_gateway.routing.router import Router
from llm_gateway.settings import Settings

log = logging.getLogger("llm_gateway")


def _redis_clients(url: str) -> tuple[Any, Any]:
    """One client for commands (short timeouts: never hang a request) and one
    for the pub/sub subscription (no read timeout: it waits for messages)."""
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # After Redis restarts, every pooled connection is a closed socket. The
    # pool notices one on checkout (EOF) and reconnects — unless maintenance
    # notifications are on (redis-py 8's default: "auto" over RESP3), which
    # skips that check, so each stale connection failed its first command.
    # One immediate retry on a fresh connection covers a socket closed after
    # checkout. Only on ConnectionError: a timed-out script may have run, and
    # running a limit script twice would charge the limit twice.
    extra: dict[str, Any] = {"retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))}
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # older redis-py: no notifications, and the check always runs
        pass
    else:
        extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    commands = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, health_check_interval=30,
                                    **extra)
    listener = redis.Redis.from_url(url, socket_connect_timeout=1, health_check_interval=5)
    return commands, listener


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    providers: dict[str, Provider]
    router: Router
    pipeline: Pipeline
    db: Database
    auth: Authenticator
    throttle: LoginThrottle
    ledger: Ledger
    usage: UsageWriter
    redis: Any | None = None
    redis_listener: Any | None = None
    external: ExternalJWTVerifier | None = None
    observer: Observer | None = None
    redis_watch: RedisWatch | None = None  # whether the limiter and cache use Redis now; /ready updates it
    responses: ResponseStore | None = None  # stored /v1/responses answers
    started_at: int = field(default_factory=lambda: int(time.time()))
    ids: RequestIds = field(default_factory=RequestIds)
    _retry: asyncio.Task[None] | None = None
    _sweeper: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings) -> GatewayState:
        providers = {p.name: build_provider(p) for p in settings.providers}
        db = Database(settings.database_url)
        redis, listener = _redis_clients(settings.redis_url) if settings.redis_url else (None, None)
        router = Router(settings.models, providers, settings.routing, redis)
        cache: TTLCache[Principal | Refusal] = TTLCache(ttl=1.0)
        bus = InvalidationBus(cache, listener)
        # A configured master key is compared in memory; a generated one is
        # read from the database (and cached) like an API key, so that a
        # rotation reaches every process. Until the database answers, only a
        # configured master key works.
        master = hash_secret(settings.master_key) if settings.master_key else "!" + secrets.token_hex(32)
        tokens = TokenService(settings.auth.jwt_secret or secrets.token_urlsafe(48), settings.auth.access_ttl_s)
        external = ExternalJWTVerifier(settings.auth.external) if settings.auth.external else None
        auth = Authenticator(db, cache, bus, master_hash=master, tokens=tokens, external=external,
                             stored_master=not settings.master_key)
        throttle = LoginThrottle(redis)
        billing = settings.billing
        ledger = Ledger(db, reservation_ttl_s=billing.reservation_ttl_s, journal_dir=billing.journal_dir,
                        journal_after=billing.journal_after, settle_wait_s=billing.settle_wait_s,
                        synchronous_commit=billing.synchronous_commit)
        usage = UsageWriter(db, flush_interval_s=settings.usage_flush_interval_s)
        watch = RedisWatch(redis) if redis is not None else None
        limiter = Limiter(settings.limits, redis, watch)
        response_cache = ResponseCache(settings.cache, redis, watch)
        pipeline = Pipeline(router, ledger, usage, limiter, response_cache)
        observer = pipeline.observer = Observer(settings, router)
        limiter.on_redis_failure = observer.metrics.redis_fallbacks.labels("limits").inc
        response_cache.on_redis_failure = observer.metrics.redis_fallbacks.labels("cache").inc
        return cls(
            settings, providers, router, pipeline, db, auth, throttle, ledger, usage, redis, listener,
            external=external, observer=observer, redis_watch=watch,
            responses=ResponseStore(db, settings.responses),
        )

    async def start(self) -> None:
        self.ids = RequestIds()  # a fresh prefix in every worker process
        if self.observer is not None:
            await self.observer.start()
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        if self.external is not None:
            await self.external.start()
        self.auth.bus.start()
        self.usage.start()
        self.ledger.start()
        self.router.start()
        sweep_every = min(30.0, self.settings.billing.reservation_ttl_s / 2)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(sweep_every))
        try:
            await ensure_schema(self.db)
            await self._load_secrets()
        except SchemaOutOfDate:
            raise
        except Exception as exc:
            log.error("database unreachable at start-up (%s); retrying in the background", type(exc).__name__)
            self._retry = asyncio.get_running_loop().create_task(self._retry_secrets())
        # Everything loaded so far (the framework, the providers, the config)
        # lives as long as the process: moved out of the collector's sight, a
        # full collection no longer walks ~130,000 objects in the middle of a
        # request (the periodic 10 ms stall of the p99 at one connection).
        gc.collect()
        gc.freeze()

    async def _load_secrets(self) -> None:
        await bootstrap.ensure_master_key(self.db, self.settings)
        secret = await bootstrap.jwt_secret(self.db, self.settings)
        self.auth.tokens = TokenService(secret, self.settings.auth.access_ttl_s)

    async def _retry_secrets(self) -> None:
        while True:
            await asyncio.sleep(2)
            try:
                await ensure_schema(self.db)
                await self._load_secrets()
                log.info("database reachable again")
                return
            except SchemaOutOfDate as exc:
                log.error("%s", exc)
                return
            except Exception:
                continue

    async def _sweep_forever(self, every_s: float = 30.0) -> None:
        """Release reservations left by processes that died mid-request."""
        while True:
            await asyncio.sleep(every_s)
            try:
                released = await self.ledger.sweep()
                if released:
                    log.warning("released %d expired reservations", released)
            except Exception as exc:
                log.warning("reservation sweep failed (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        for task in (self._retry, self._sweeper):
            if task is not None:
                task.cancel()
        await self.pipeline.drain()
        await self.router.aclose()
        await self.usage.aclose()
        if self.observer is not None:
            await self.observer.aclose()
        await self.ledger.aclose()
        await self.auth.aclose()
        await self.auth.bus.aclose()
        if self.external is not None:
            await self.external.aclose()
        await asyncio.gather(*(p.aclose() for p in self.providers.values()), return_exceptions=True)
        if self.redis_watch is not None:
            await self.redis_watch.aclose()
        for client in (self.redis, self.redis_listener):
            if client is not None:
                await client.aclose()
        await self.db.aclose()
