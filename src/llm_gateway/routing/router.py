"""Model resolution and deployment choice.

A ``Route`` is one concrete target: the model entry that owns it, the
deployment, and the provider adapter that serves it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from llm_gateway.errors import ModelNotFound
from llm_gateway.providers.base import Provider, Target
from llm_gateway.settings import Deployment, ModelSettings


@dataclass(slots=True, frozen=True)
class Route:
    model: ModelSettings
    deployment: Deployment
    provider: Provider
    target: Target

    @property
    def label(self) -> str:
        """``<provider name>/<upstream model>``, as in ``x-gateway-deployment``."""
        return f"{self.deployment.provider}/{self.deployment.model}"


class Router:
    """Resolves client model names and picks a deployment by weight."""

    def __init__(self, models: list[ModelSettings], providers: Mapping[str, Provider]) -> None:
        self._models = {m.name: m for m in models}
        self._routes = {
            m.name: [
                Route(m, d, providers[d.provider], Target(d.model, m.max_output_tokens))
                for d in m.deployments
            ] for m in models
        }
        self._weights = {m.name: [d.weight for d in m.deployments] for m in models}
        self._rng = random.Random()

    @property
    def models(self) -> Mapping[str, ModelSettings]:
        return self._models

    def resolve(self, name: str) -> ModelSettings:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.", param="model"
            )
        return model

    def choose(self, model: ModelSettings) -> Route:
        routes = self._routes[model.name]
        if len(routes) == 1:
            return routes[0]
        return self._rng.choices(routes, weights=self._weights[model.name])[0]
