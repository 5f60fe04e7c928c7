"""``/v1/responses`` through the clients people use: the OpenAI Agents SDK
in its default mode (the Responses API) with a function tool, and
LangChain's ``ChatOpenAI(use_responses_api=True)``, against any model."""

from __future__ import annotations

import asyncio

import agents
import langchain_openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import MASTER_KEY, Stack


@pytest.mark.parametrize("model", ["mock", "gpt-test"])
def test_agents_sdk_runs_a_function_tool(stack: Stack, model: str) -> None:
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model=model, openai_client=client))
    result = asyncio.run(agents.Runner.run(agent, "Weather in Paris?"))
    assert calls and "sunny in" in str(result.final_output)


@pytest.mark.parametrize("model", ["mock", "gpt-test"])
def test_langchain_chat_openai_with_the_responses_api(stack: Stack, model: str) -> None:
    llm = langchain_openai.ChatOpenAI(model=model, base_url=f"{stack.url}/v1", api_key=MASTER_KEY,
                                      use_responses_api=True, max_retries=0)
    answer = llm.invoke("Hello from LangChain")
    assert "Hello from LangChain" in answer.text
    streamed = "".join(chunk.text for chunk in llm.stream("Stream from LangChain"))
    assert "Stream from LangChain" in streamed
