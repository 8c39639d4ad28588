"""Tool prompts and tool-call parsing for chat templates without tool support."""

from __future__ import annotations

import json

import pytest

from tether.engine import EngineConfig, Request
from tether.engine.engine import Engine
from tether.runtime.chat_format import (ChatFormatError, ToolCallStreamFilter, apply_tools_to_messages,
                                        parse_tool_calls, render_tool_prompt)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def default_tokenizer():
    """The default model's tokenizer alone (about a second; no weights loaded)."""
    from transformers import AutoTokenizer

    from tether.engine.model_loader import resolve_model_path
    return AutoTokenizer.from_pretrained(resolve_model_path("default"))


# ---- rendering ----------------------------------------------------------------------

def test_tool_prompt_lists_schemas_and_the_call_format():
    text = render_tool_prompt([WEATHER, SEARCH])
    listed = [json.loads(line) for line in text.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()]
    assert listed == [WEATHER, SEARCH]
    assert "<tool_call>" in text and "</tool_call>" in text and "answer the user directly" in text
    assert "must call the function 'search'" in render_tool_prompt([WEATHER, SEARCH], "search")
    assert "must call at least one" in render_tool_prompt([WEATHER], "required")


def test_tools_extend_the_system_message_or_form_one():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = apply_tools_to_messages(msgs, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n# Tools") and "get_weather" in out[0]["content"]
    out = apply_tools_to_messages([{"role": "user", "content": "Hi"}], [WEATHER])
    assert [m["role"] for m in out] == ["system", "user"] and "get_weather" in out[0]["content"]
    assert msgs[0]["content"] == "Be brief."  # the caller's messages are not modified


def test_tool_choice_none_lists_no_tools_and_named_choice_is_instructed():
    msgs = [{"role": "user", "content": "Hi"}]
    assert apply_tools_to_messages(msgs, [WEATHER], "none") == msgs
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert "must call the function 'get_weather'" in apply_tools_to_messages(msgs, [WEATHER], named)[0]["content"]
    with pytest.raises(ChatFormatError, match="not among the tools"):
        apply_tools_to_messages(msgs, [WEATHER], {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ChatFormatError, match="needs tools"):
        apply_tools_to_messages(msgs, [], "required")


def test_multi_turn_tool_conversation_round_trips():
    msgs = [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris "},
                                     {"type": "text", "text": "and Rome?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "24C"},
    ]
    out = apply_tools_to_messages(msgs, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert all(isinstance(m["content"], str) and set(m) == {"role", "content"} for m in out)
    assert out[1]["content"] == "Weather in Paris and Rome?"
    # The assistant's earlier calls parse back to what was sent.
    again = parse_tool_calls(out[2]["content"])
    assert [(c.name, c.arguments) for c in again.tool_calls] == [("get_weather", {"city": "Paris"}),
                                                                 ("get_weather", {"city": "Rome"})]
    # Parallel results share one user turn, each named after its call.
    assert out[3]["content"].count("<tool_response") == 2
    assert '<tool_response name="get_weather" id="c1">\n18C\n</tool_response>' in out[3]["content"]


def test_unrenderable_messages_are_refused_with_the_field():
    with pytest.raises(ChatFormatError, match=r"messages\[0\].content: unsupported content part 'image_url'"):
        apply_tools_to_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], None)
    with pytest.raises(ChatFormatError, match=r"messages\[0\].role"):
        apply_tools_to_messages([{"role": "robot", "content": "x"}], None)


def test_engine_renders_tool_messages_with_the_chat_template(tiny_model, default_tokenizer):
    engine = Engine(EngineConfig(num_kv_blocks=4), hf_model=tiny_model, tokenizer=default_tokenizer)
    msgs = apply_tools_to_messages([{"role": "user", "content": "Hi"}], [WEATHER])
    ids = engine.render(Request(messages=msgs)).prompt_token_ids
    text = default_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n# Tools") and text.endswith("<|im_start|>assistant\n")


# ---- parsing ------------------------------------------------------------------------

def test_parses_calls_and_keeps_text_outside_them():
    r = parse_tool_calls('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                         '</tool_call>\n<tool_call>{"name": "search", "arguments": "{\\"q\\": 1}"}</tool_call>')
    assert r.content == "Let me check." and r.errors == []
    assert [(c.name, c.arguments) for c in r.tool_calls] == [("get_weather", {"city": "Paris"}), ("search", {"q": 1})]
    assert len({c.id for c in r.tool_calls}) == 2 and r.tool_calls[0].id.startswith("call_")
    wire = r.tool_calls[0].to_openai()
    assert wire["type"] == "function" and json.loads(wire["function"]["arguments"]) == {"city": "Paris"}


def test_plain_text_has_no_calls():
    assert parse_tool_calls("  Just an answer.  ") == parse_tool_calls("Just an answer.")
    r = parse_tool_calls("Just an answer.")
    assert r.content == "Just an answer." and r.tool_calls == [] and r.errors == []


def test_tolerated_variants():
    fenced = parse_tool_calls('<tool_call>```json\n{"name": "search", "parameters": {"q": "x"}}\n```</tool_call>')
    assert [(c.name, c.arguments) for c in fenced.tool_calls] == [("search", {"q": "x"})]
    no_args = parse_tool_calls('<tool_call>{"name": "search"}</tool_call>')
    assert no_args.tool_calls[0].arguments == {} and no_args.errors == []


@pytest.mark.parametrize("block, expect", [
    ('{"name": "f", "arguments": {', "invalid JSON"),
    ('{"arguments": {}}', 'missing "name"'),
    ('{"name": "f", "arguments": [1, 2]}', "must be a JSON object"),
    ('{"name": "f", "arguments": "not json"}', "arguments are not valid JSON"),
    ('["f"]', "expected a JSON object"),
])
def test_malformed_blocks_become_errors(block, expect):
    r = parse_tool_calls(f"ok <tool_call>{block}</tool_call> <tool_call>{{\"name\": \"g\"}}</tool_call>")
    assert [c.name for c in r.tool_calls] == ["g"] and r.content == "ok"
    assert len(r.errors) == 1 and expect in r.errors[0] and r.errors[0].startswith("tool call 1")
    assert '<tool_call>{"name": "<function name>"' in r.errors[0] or "unknown" in r.errors[0]


def test_unknown_tool_name_and_unclosed_final_block():
    r = parse_tool_calls('<tool_call>{"name": "nope"}</tool_call>', tool_names={"search"})
    assert r.tool_calls == [] and "unknown function 'nope'; available: search" in r.errors[0]
    r = parse_tool_calls('Sure <tool_call>{"name": "search", "argu', tool_names={"search"})
    assert r.content == "Sure" and r.tool_calls == [] and "never closed" in r.errors[0]


# ---- streaming ----------------------------------------------------------------------

def _stream(text: str, size: int) -> tuple[str, str, object]:
    f = ToolCallStreamFilter()
    shown = "".join(f.feed(text[i:i + size]) for i in range(0, len(text), size))
    tail, reply = f.finish()
    return shown, tail, reply


@pytest.mark.parametrize("size", [1, 3, 100])
def test_stream_filter_passes_text_and_holds_calls(size):
    shown, tail, reply = _stream('Checking <tool>.\n<tool_call>{"name": "search"}</tool_call>', size)
    assert shown == "Checking <tool>.\n" and tail == "" and [c.name for c in reply.tool_calls] == ["search"]
    shown, tail, reply = _stream("No tools here <tool_ca", size)  # a tag that never completes is text
    assert shown + tail == "No tools here <tool_ca" and reply.tool_calls == []
    shown, tail, reply = _stream('<tool_call>{"bad"}</tool_call>', size)  # nothing usable: the raw text is shown
    assert shown + tail == '<tool_call>{"bad"}</tool_call>' and len(reply.errors) == 1
