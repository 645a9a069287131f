"""Structured output through the official `openai` client, unchanged: 20 Pydantic models
with `client.chat.completions.parse` (and a subset streamed), a regex and a Lark grammar
(vLLM's `guided_regex` / `guided_grammar`), refusals of bad schemas, and the same answers
whether requests run alone or batched together.

Usage: structured.py BASE_URL MODEL_ID; prints one JSON document for the Rust test.
"""

import concurrent.futures
import enum
import json
import re
import sys
from typing import Annotated, List, Literal, Optional

import openai
import pydantic
from pydantic import BaseModel, Field

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)

Name = Field(min_length=1, max_length=24)


class Color(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Person(BaseModel):
    name: str = Name
    age: int = Field(ge=0, le=120)


class City(BaseModel):
    city: str = Name
    country: str = Name
    population_millions: int = Field(ge=0, le=50)


class Flag(BaseModel):
    answer: bool


class Pick(BaseModel):
    color: Color


class Mood(BaseModel):
    mood: Literal["happy", "sad", "calm"]


class Tags(BaseModel):
    tags: List[Annotated[str, Field(max_length=16)]] = Field(min_length=1, max_length=3)


class Scores(BaseModel):
    scores: List[int] = Field(min_length=2, max_length=4)


class Address(BaseModel):
    street: str = Name
    number: int = Field(ge=1, le=9999)


class Customer(BaseModel):
    name: str = Name
    address: Address


class Item(BaseModel):
    title: str = Name
    price: float = Field(ge=0, le=1000)


class Order(BaseModel):
    order_id: int = Field(ge=1, le=100000)
    items: List[Item] = Field(min_length=1, max_length=2)


class Maybe(BaseModel):
    title: str = Name
    subtitle: Optional[str] = Field(default=None, max_length=24)


class Rating(BaseModel):
    stars: int = Field(ge=1, le=5)
    comment: str = Field(max_length=40)


class Point(BaseModel):
    x: float = Field(ge=-100, le=100)
    y: float = Field(ge=-100, le=100)


class Line(BaseModel):
    start: Point
    end: Point


class Book(BaseModel):
    title: str = Name
    author: str = Name
    year: int = Field(ge=1400, le=2030)
    genre: Literal["fiction", "science", "history"]


class Team(BaseModel):
    team: str = Name
    members: List[Person] = Field(min_length=1, max_length=2)


class Weather(BaseModel):
    temperature_c: int = Field(ge=-50, le=60)
    sky: Literal["sunny", "cloudy", "rainy"]
    windy: bool


class Word(BaseModel):
    word: str = Field(min_length=1, max_length=12, pattern=r"^[a-z]+$")


class Inventory(BaseModel):
    counts: List[int] = Field(min_length=1, max_length=3)
    location: Optional[Literal["north", "south"]] = None


class Event(BaseModel):
    name: str = Name
    day: int = Field(ge=1, le=31)
    month: int = Field(ge=1, le=12)
    attendees: List[str] = Field(max_length=2)


CASES = [
    (Person, "Describe a person named Alice who is 30."),
    (City, "Give facts about Paris."),
    (Flag, "Is the sky blue?"),
    (Pick, "Pick a colour."),
    (Mood, "How do you feel?"),
    (Tags, "Tag this text: cats and dogs."),
    (Scores, "Give some test scores."),
    (Customer, "Describe a customer with an address."),
    (Order, "Make an order for a book."),
    (Maybe, "Give a title for a story."),
    (Rating, "Rate a film."),
    (Line, "Give a line between two points."),
    (Book, "Describe a book."),
    (Team, "Describe a small team."),
    (Weather, "What is the weather like?"),
    (Word, "Say one lowercase word."),
    (Inventory, "Count some boxes."),
    (Event, "Describe an event."),
    (Person, "Describe an old man."),
    (City, "Give facts about Tokyo."),
]


def ask(schema, prompt, stream=False):
    messages = [{"role": "user", "content": prompt}]
    kw = dict(model=model, messages=messages, response_format=schema, max_tokens=400, temperature=0)
    if stream:
        with client.chat.completions.stream(**kw) as s:
            done = s.get_final_completion()
    else:
        done = client.chat.completions.parse(**kw)
    msg = done.choices[0].message
    # Validate the text on its own too, not only what the client parsed.
    schema.model_validate_json(msg.content)
    return msg.content, msg.parsed is not None, done.choices[0].finish_reason


out = {"parsed": [], "streamed": [], "errors": []}
for schema, prompt in CASES:
    try:
        content, parsed, finish = ask(schema, prompt)
        out["parsed"].append({"schema": schema.__name__, "content": content, "parsed": parsed, "finish": finish})
    except Exception as e:  # reported, and the Rust test fails on it
        out["errors"].append(f"{schema.__name__}: {type(e).__name__}: {e}")
for schema, prompt in CASES[:5]:
    try:
        content, parsed, finish = ask(schema, prompt, stream=True)
        out["streamed"].append({"schema": schema.__name__, "content": content, "parsed": parsed})
    except Exception as e:
        out["errors"].append(f"stream {schema.__name__}: {type(e).__name__}: {e}")

# A regular expression and a Lark grammar (vLLM's names), through extra_body.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Give a phone number."}],
    max_tokens=40, temperature=0, extra_body={"guided_regex": r"\d{3}-\d{4}"})
out["regex"] = r.choices[0].message.content
out["regex_ok"] = re.fullmatch(r"\d{3}-\d{4}", out["regex"] or "") is not None
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Is water wet?"}],
    max_tokens=10, temperature=0, extra_body={"guided_grammar": 'start: "yes" | "no"'})
out["lark"] = r.choices[0].message.content
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Any JSON, please."}],
    max_tokens=200, temperature=0, response_format={"type": "json_object"})
out["json_object"] = json.loads(r.choices[0].message.content)

# Refusals: a 400 naming the problem.
refusals = {}
for name, body in [
    ("bad_type", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}}),
    ("unsatisfiable", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 5, "maximum": 1}}}}),
    ("bad_regex", {"guided_regex": "(abc"}),
    ("unknown_format", {"response_format": {"type": "yaml"}}),
    ("two_at_once", {"guided_regex": "a", "guided_grammar": 'start: "a"'}),
]:
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_body=body)
        refusals[name] = "accepted"
    except openai.BadRequestError as e:
        refusals[name] = e.body.get("message") if isinstance(e.body, dict) else str(e)
out["refusals"] = refusals

# Batching never changes a constrained answer: the same requests alone, then together.
def content_of(case):
    s, p = case
    try:
        return ask(s, p)[0]
    except Exception as e:
        return f"{type(e).__name__}: {e}"


batch = CASES[:6]
alone = [content_of(c) for c in batch]
with concurrent.futures.ThreadPoolExecutor(len(batch)) as ex:
    together = list(ex.map(content_of, batch))
out["batch_equal"] = alone == together
out["alone"], out["together"] = alone, together
print(json.dumps(out))
