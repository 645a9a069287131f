"""Agent frameworks against the daemon, unchanged: LangChain's `ChatOpenAI.bind_tools` runs a
two-step tool loop (streamed and not) and `with_structured_output` returns a Pydantic object;
the OpenAI Agents SDK runs an agent whose tool is called and whose answer comes back (streamed
and not); instructor extracts a Pydantic model.

Usage: frameworks.py BASE_URL MODEL_ID; prints one JSON document for the Rust test.
"""

import asyncio
import json
import sys

from pydantic import BaseModel, Field

base, model = sys.argv[1], sys.argv[2]
out = {"errors": []}
WEATHER = {"calls": 0}


def weather(city: str) -> str:
    WEATHER["calls"] += 1
    return json.dumps({"city": city, "temperature_c": 18, "sky": "clear"})


class City(BaseModel):
    name: str = Field(min_length=1, max_length=40)
    country: str = Field(min_length=1, max_length=40)


def langchain_part():
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return weather(city)

    llm = ChatOpenAI(base_url=base + "/v1", api_key="none", model=model, temperature=0,
                     max_tokens=64, max_retries=0)
    forced = llm.bind_tools([get_weather], tool_choice="get_weather")
    ask = [HumanMessage("What is the weather in Paris?")]
    result = {}
    for mode in ("invoke", "stream"):
        if mode == "invoke":
            ai = forced.invoke(ask)
        else:
            ai = None
            for chunk in forced.stream(ask):
                ai = chunk if ai is None else ai + chunk
        calls = ai.tool_calls
        history = ask + [ai] + [
            ToolMessage(content=get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in calls
        ]
        if mode == "invoke":
            final = llm.bind_tools([get_weather]).invoke(history)
            text = final.content
        else:
            text = "".join(str(c.content) for c in llm.bind_tools([get_weather]).stream(history))
        result[mode] = {
            "calls": [[c["name"], c["args"]] for c in calls],
            "answer": text,
        }
    structured = llm.with_structured_output(City, method="json_schema").invoke(
        "Name a city in Japan and its country."
    )
    result["structured"] = type(structured).__name__
    result["structured_by_tool"] = type(
        llm.with_structured_output(City, method="function_calling").invoke(
            "Name a city in Italy and its country."
        )
    ).__name__
    return result


def agents_part():
    from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, Runner,
                        function_tool, set_tracing_disabled)
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return weather(city)

    agent = Agent(
        name="Weather",
        instructions="Answer weather questions with the get_weather tool.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=64),
    )
    async def both():
        before = WEATHER["calls"]
        whole = await Runner.run(agent, "What is the weather in Rome?", max_turns=4)
        whole_calls = WEATHER["calls"] - before
        before = WEATHER["calls"]
        run = Runner.run_streamed(agent, "What is the weather in Oslo?", max_turns=4)
        kinds = []
        async for ev in run.stream_events():
            if ev.type == "run_item_stream_event":
                kinds.append(ev.item.type)
        return {
            "whole": {"final": whole.final_output, "tool_runs": whole_calls},
            "streamed": {"final": run.final_output, "tool_runs": WEATHER["calls"] - before,
                         "items": kinds},
        }

    return asyncio.run(both())


def instructor_part():
    import instructor
    from openai import OpenAI

    client = instructor.from_openai(
        OpenAI(base_url=base + "/v1", api_key="none", max_retries=0),
        mode=instructor.Mode.JSON_SCHEMA,
    )
    city = client.chat.completions.create(
        model=model, response_model=City, temperature=0, max_tokens=64, max_retries=0,
        messages=[{"role": "user", "content": "Name a city in France and its country."}],
    )
    return type(city).__name__


for name, part in (("langchain", langchain_part), ("agents", agents_part),
                   ("instructor", instructor_part)):
    try:
        out[name] = part()
    except Exception as e:  # reported to the Rust test, which shows it
        out["errors"].append(f"{name}: {type(e).__name__}: {e}")
print(json.dumps(out, default=str))
