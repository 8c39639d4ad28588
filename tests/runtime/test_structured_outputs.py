"""Structured outputs over HTTP, driven by the official ``openai`` client: ``tool_choice``, ``response_format``.

The server runs the real default model (SmolLM2-135M-Instruct). Every call is
checked the way a client would: the tool call parses and its arguments match
the tool's schema; the content matches the response schema.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from tether.engine import Engine, EngineConfig
from tether.runtime.bench_serve import running_server
from tether.runtime.client import LocalClient
from tether.runtime.server import create_app

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
PROMPTS = ["What is the weather in Paris?", "Add 2 and 40.", "Hello!", "Is it raining in Tokyo right now?"]


@pytest.fixture(scope="module")
def oai(default_model):
    engine = Engine(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256), hf_model=default_model.hf_model,
                    tokenizer=default_model.tokenizer)
    with running_server(create_app(LocalClient(engine, "smollm2"), model_name="smollm2")) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120)


def _ask(text):
    return [{"role": "user", "content": text}]


def _check_call(name, arguments):
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def _required_plain(oai, text, seed, parallel):
    r = oai.chat.completions.create(model="smollm2", messages=_ask(text), tools=TOOLS, tool_choice="required",
                                    parallel_tool_calls=parallel, max_tokens=64, temperature=0.7, seed=seed)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice.message
    assert parallel or len(choice.message.tool_calls) == 1
    return [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls]


def _required_streamed(oai, text, seed, parallel):
    calls: dict[int, dict] = {}
    finish = None
    stream = oai.chat.completions.create(model="smollm2", messages=_ask(text), tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=parallel, max_tokens=64, temperature=0.7, seed=seed,
                                         stream=True)
    for chunk in stream:
        for d in chunk.choices[0].delta.tool_calls or []:  # OpenAI's delta shape: index, id once, then pieces
            acc = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            acc["id"] = acc["id"] or d.id
            acc["name"] += (d.function.name or "") if d.function else ""
            acc["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls
    return [(c["id"], c["name"], c["arguments"]) for c in calls.values()]


def test_required_gives_valid_tool_calls_plain_and_streamed(oai):
    jobs = [(fn, text, seed, seed % 2 == 0) for seed, text in enumerate(PROMPTS)
            for fn in (_required_plain, _required_streamed)]
    with ThreadPoolExecutor(len(jobs)) as pool:  # concurrent: the engine batches them
        results = list(pool.map(lambda job: job[0](oai, *job[1:]), jobs))
    for calls in results:
        for call_id, name, arguments in calls:
            assert call_id
            _check_call(name, arguments)


def test_named_function_and_no_parallel_calls(oai):
    r = oai.chat.completions.create(model="smollm2", messages=_ask("Weather in Rome, and add 1 and 2."),
                                    tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
                                    parallel_tool_calls=False, max_tokens=80, temperature=0.7, seed=3)
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "add"
    _check_call("add", call.function.arguments)


def test_tool_choice_none_leaves_the_reply_free(oai):
    r = oai.chat.completions.create(model="smollm2", messages=_ask(PROMPTS[0]), tools=TOOLS, tool_choice="none",
                                    max_tokens=12, temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


def test_response_format_json_schema_and_json_object(oai):
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                               "count": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["color", "count"], "additionalProperties": False}
    r = oai.chat.completions.create(model="smollm2", messages=_ask("Pick a color and a count."), max_tokens=40,
                                    temperature=0.7, seed=1, response_format={
                                        "type": "json_schema",
                                        "json_schema": {"name": "pick", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = oai.chat.completions.create(model="smollm2", messages=_ask("Describe a cat as JSON."), max_tokens=30,
                                    temperature=0, response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":  # within max_tokens the object is complete
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("kw, where", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}],
      "tool_choice": "required"}, "tools[0].function.parameters"),
    ({"tool_choice": "required"}, "needs tools"),
])
def test_bad_schemas_get_a_400_naming_the_problem(oai, kw, where):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="smollm2", messages=_ask("hi"), max_tokens=4, **kw)
    assert where in str(info.value)
