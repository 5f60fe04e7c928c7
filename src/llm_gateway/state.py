"""Everything a running gateway holds, created in the app's lifespan and
reached from requests through ``request.app.state.gateway`` — no globals."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from llm_gateway.ids import RequestIds
from llm_gateway.pipeline import Pipeline
from llm_gateway.providers.base import Provider
from llm_gateway.providers.registry import build_provider
from llm_gateway.routing.router import Router
from llm_gateway.settings import Settings


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    providers: dict[str, Provider]
    router: Router
    pipeline: Pipeline
    started_at: int = field(default_factory=lambda: int(time.time()))
    ids: RequestIds = field(default_factory=RequestIds)

    @classmethod
    def build(cls, settings: Settings) -> GatewayState:
        providers = {p.name: build_provider(p) for p in settings.providers}
        router = Router(settings.models, providers)
        return cls(settings, providers, router, Pipeline(router))

    async def start(self) -> None:
        self.ids = RequestIds()  # a fresh prefix in every worker process
        await asyncio.gather(*(p.start() for p in self.providers.values()))

    async def aclose(self) -> None:
        await asyncio.gather(*(p.aclose() for p in self.providers.values()), return_exceptions=True)
