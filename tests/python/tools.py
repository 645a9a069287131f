"""Tool calling through the official `openai` client, unchanged: a two-step tool loop
(the model calls, the tool's result goes back, the model answers), streamed and not;
`pydantic_function_tool` with `parse` (strict function tools, arguments parsed into the
Pydantic model); a named `tool_choice`; parallel calls; the streamed call reassembled
equal to the whole one; bad tool requests refused with a 400 naming the problem.

Usage: tools.py BASE_URL MODEL_ID; prints one JSON document for the Rust test.
"""

import json
import sys
from typing import Literal

import openai
import pydantic
from pydantic import BaseModel, Field

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(min_length=1, max_length=40)
    unit: Literal["celsius", "fahrenheit"]


class GetTime(BaseModel):
    """Get the local time in a time zone."""

    timezone: str = Field(min_length=1, max_length=40)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": GetWeather.model_json_schema(),
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone.",
        "parameters": GetTime.model_json_schema(),
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
out = {"errors": []}


def check_call(call, model_cls):
    """The call's arguments validate against the function's Pydantic model."""
    try:
        model_cls.model_validate_json(call.function.arguments)
        return True
    except pydantic.ValidationError as e:
        out["errors"].append(f"{call.function.name}: {call.function.arguments!r}: {e}")
        return False


# 1. The loop, whole answers: a forced call, then the result back and a text answer.
first = client.chat.completions.create(
    model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
    parallel_tool_calls=False, temperature=0, max_tokens=96,
)
choice = first.choices[0]
calls = choice.message.tool_calls or []
out["required"] = {
    "finish_reason": choice.finish_reason,
    "calls": [[c.function.name, c.function.arguments, c.id, c.type] for c in calls],
    "content": choice.message.content,
    "valid": all(check_call(c, GetWeather if c.function.name == "get_weather" else GetTime) for c in calls),
}
if calls:
    history = ASK + [choice.message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}
        for c in calls
    ]
    second = client.chat.completions.create(
        model=model, messages=history, tools=[WEATHER, TIME], temperature=0, max_tokens=48,
    )
    out["answer"] = {
        "content": second.choices[0].message.content,
        "finish_reason": second.choices[0].finish_reason,
        "prompt_tokens": second.usage.prompt_tokens,
        "first_prompt_tokens": first.usage.prompt_tokens,
    }

# 2. The same forced call streamed (named function): reassembled from the deltas, it equals
# the whole answer.
named = {"type": "function", "function": {"name": "get_weather"}}
kwargs = dict(model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice=named,
              temperature=0, max_tokens=96)
whole = client.chat.completions.create(**kwargs).choices[0]
pieces, ids, names, reason, chunks = {}, {}, {}, None, 0
for chunk in client.chat.completions.create(stream=True, **kwargs):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            chunks += 1
            if d.id:
                ids[d.index] = d.id
            if d.function and d.function.name:
                names[d.index] = d.function.name
            if d.function and d.function.arguments:
                pieces[d.index] = pieces.get(d.index, "") + d.function.arguments
        reason = c.finish_reason or reason
out["streamed"] = {
    "whole": [[c.function.name, c.function.arguments] for c in whole.message.tool_calls or []],
    "streamed": [[names.get(i), pieces.get(i, "")] for i in sorted(names)],
    "ids": len(ids),
    "chunks": chunks,
    "finish_reason": reason,
    "whole_finish_reason": whole.finish_reason,
}

# The loop again, streamed both ways: the call reassembled from its deltas goes back with
# the tool's result, and the answer streams as text.
if names:
    streamed_history = ASK + [{
        "role": "assistant",
        "tool_calls": [
            {"id": ids[i], "type": "function", "function": {"name": names[i], "arguments": pieces.get(i, "")}}
            for i in sorted(names)
        ],
    }] + [
        {"role": "tool", "tool_call_id": ids[i], "content": json.dumps({"temperature": 18})}
        for i in sorted(names)
    ]
    answer_text, answer_reason = "", None
    for chunk in client.chat.completions.create(
        model=model, messages=streamed_history, tools=[WEATHER, TIME], temperature=0,
        max_tokens=48, stream=True,
    ):
        for c in chunk.choices:
            answer_text += c.delta.content or ""
            answer_reason = c.finish_reason or answer_reason
    out["streamed_answer"] = {"content": answer_text, "finish_reason": answer_reason}

# 3. The client's own strict function tools: `parse` returns the arguments as the model.
parsed = client.chat.completions.parse(
    model=model, messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
    tools=[openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(GetTime)],
    tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=96,
)
pc = parsed.choices[0].message.tool_calls or []
out["parsed"] = [
    [c.function.name, type(c.function.parsed_arguments).__name__] for c in pc
]

# 4. Parallel calls allowed: every call is one of the tools, with valid arguments.
par = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Weather in Oslo and the time in Tokyo?"}],
    tools=[WEATHER, TIME], tool_choice="required", temperature=0, max_tokens=200,
)
pcalls = par.choices[0].message.tool_calls or []
out["parallel"] = {
    "count": len(pcalls),
    "finish_reason": par.choices[0].finish_reason,
    "valid": all(check_call(c, GetWeather if c.function.name == "get_weather" else GetTime) for c in pcalls)
    if par.choices[0].finish_reason == "tool_calls" else None,
}

# 5. Streamed text answer with tools offered but not forced (`auto`): content arrives.
text = ""
for chunk in client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hello."}], tools=[WEATHER],
    tool_choice="none", temperature=0, max_tokens=16, stream=True,
):
    for c in chunk.choices:
        text += c.delta.content or ""
out["none_text"] = text

# 6. Refusals.
def refusal(**kw):
    try:
        client.chat.completions.create(model=model, max_tokens=4, **kw)
        return "accepted"
    except openai.BadRequestError as e:
        return str(e)


out["refusals"] = {
    "unknown_tool": refusal(messages=ASK, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "launch_rocket"}}),
    "required_without_tools": refusal(messages=ASK, tool_choice="required"),
    "orphan_result": refusal(messages=ASK + [{"role": "tool", "tool_call_id": "call_nope", "content": "1"}]),
    "bad_name": refusal(messages=ASK, tools=[{"type": "function", "function": {"name": "bad name!", "parameters": {}}}]),
    "duplicate": refusal(messages=ASK, tools=[WEATHER, WEATHER]),
    "bad_schema": refusal(messages=ASK, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "foo"}}}}}], tool_choice="required"),
    "with_response_format": refusal(messages=ASK, tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"}),
}
print(json.dumps(out))
