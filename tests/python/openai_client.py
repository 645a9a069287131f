"""The official `openai` Python package against a running Oasis daemon.

Usage: python openai_client.py BASE_URL MODEL_ID

Runs a chat completion, a streamed chat completion, a completion and models.list() with
the unmodified client, checks what comes back, and prints one JSON line of results for
the Rust test to check further. Exits non-zero (with the assertion) on any mismatch.
"""

import json
import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    out = {"openai_version": openai.__version__}

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert model in ids, ids
    out["models"] = ids

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=24,
        temperature=0,
    )
    assert chat.object == "chat.completion", chat
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    assert chat.usage.completion_tokens > 0
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    out["chat"] = choice.message.content
    out["chat_usage"] = chat.usage.model_dump()

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    streamed = "".join(parts)
    assert roles == ["assistant"], roles
    assert streamed == out["chat"], (streamed, out["chat"])
    assert finish == choice.finish_reason, finish
    assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
    out["stream"] = streamed

    comp = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert comp.object == "text_completion", comp
    assert comp.choices[0].finish_reason in ("stop", "length")
    assert comp.usage.completion_tokens == 8 or comp.choices[0].finish_reason == "stop"
    out["completion"] = comp.choices[0].text

    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        out["not_found"] = e.status_code

    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], temperature=5
        )
        raise AssertionError("temperature 5 accepted")
    except openai.BadRequestError as e:
        out["bad_request"] = e.status_code

    print(json.dumps(out))


if __name__ == "__main__":
    main()
