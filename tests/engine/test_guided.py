"""Guided decoding in the engine: grammars mask a batched step's rows, and only the rows that have one.

A random-weight model with the default model's vocabulary never writes JSON on
its own, so valid output here is the grammar's doing.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

import tether.engine.guided as guided_module

from engine_helpers import req, run_all, tokens
from tether.engine import EngineConfig, SamplingParams, build_core
from tether.engine.guided import NUMBER_STEP, Guided, bounded_numbers, json_schema_error
from tether.engine.model_loader import load_tokenizer
from tiny_model import tiny_llama

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        "home": {"type": "object", "properties": {"x": {"type": "number", "minimum": -1, "maximum": 1}},
                 "required": ["x"], "additionalProperties": False},
    },
    "required": ["name", "age", "role", "home"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=49152)


def _core(model, tok):
    return build_core(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256, max_num_seqs=16), model, tok)


def _prompt(tok, text="Describe a user as JSON."):
    return tok.encode(text, add_special_tokens=False)


def _text(tok, outs):
    return tok.decode([t for t in tokens(outs) if t != tok.eos_token_id])


def test_batched_grammars_each_hold_and_unguided_rows_are_untouched(model, tok):
    ids = _prompt(tok)
    alone = _core(model, tok)
    plain = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    alone.add_request(req("plain", ids, plain))
    expected = tokens(run_all(alone)["plain"])

    core = _core(model, tok)
    core.add_request(req("plain", ids, plain))
    for k in range(4):  # sampled, seeded: four different valid objects in the same steps
        core.add_request(req(f"json{k}", ids, SamplingParams(max_tokens=200, temperature=1.0, seed=k,
                                                              guided=Guided(json_schema=SCHEMA))))
    core.add_request(req("greedy", ids, SamplingParams(max_tokens=200, temperature=0,
                                                       guided=Guided(json_schema=SCHEMA))))
    core.add_request(req("regex", ids, SamplingParams(max_tokens=30, temperature=0.8, seed=9,
                                                      guided=Guided(regex=r"(yes|no), [0-9]{3}"))))
    outs = run_all(core)
    assert tokens(outs["plain"]) == expected  # a grammar elsewhere in the batch changes nothing here
    for rid in ["json0", "json1", "json2", "json3", "greedy"]:
        assert outs[rid][-1].finish_reason == "stop", rid  # the grammar ended it, with EOS
        jsonschema.validate(json.loads(_text(tok, outs[rid])), SCHEMA)
    assert len({_text(tok, outs[f"json{k}"]) for k in range(4)}) > 1  # sampling still samples
    assert re.fullmatch(r"(yes|no), [0-9]{3}", _text(tok, outs["regex"]))


def test_logprobs_are_the_models_and_name_the_emitted_token(model, tok):
    core = _core(model, tok)
    core.add_request(req("g", _prompt(tok), SamplingParams(max_tokens=20, temperature=0, logprobs=3,
                                                           guided=Guided(json_object=True))))
    outs = run_all(core)["g"]
    ids = tokens(outs)
    lps = [lp for o in outs for lp in o.logprobs]
    assert len(lps) == len(ids) and tok.decode(ids).startswith("{")
    for t, lp in zip(ids, lps):
        assert t in lp and len(lp) >= 3
        # The grammar, not the model, chose: the model's own top-1 is often another token.
        assert lp[t] <= max(lp.values())
    assert any(lp[t] < max(lp.values()) for t, lp in zip(ids, lps))


def test_a_preempted_guided_request_resumes_its_grammar(model, tok):
    # Few blocks: requests preempt each other (recompute) mid-output; the grammar's state survives.
    core = build_core(EngineConfig(policy="baseline", num_kv_blocks=10, max_num_batched_tokens=64, max_num_seqs=4),
                      model, tok)
    ids = _prompt(tok) * 3
    for k in range(4):
        core.add_request(req(f"r{k}", ids, SamplingParams(max_tokens=110, temperature=1.0, seed=k,
                                                          guided=Guided(json_schema=SCHEMA))))
    outs = run_all(core)
    assert core.stats()["preemptions"] > 0
    for k in range(4):
        jsonschema.validate(json.loads(_text(tok, outs[f"r{k}"])), SCHEMA)


@pytest.mark.parametrize("spec, fragment", [
    ({"json_schema": {"type": "wat"}}, "wat"),
    ({"regex": "(unclosed"}, "regex"),
    ({"lark": "start: missing_rule"}, "missing_rule"),
    ({}, "exactly one"),
    ({"regex": "a", "json_object": True}, "exactly one"),
])
def test_bad_grammars_are_refused_naming_the_problem(spec, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        SamplingParams(guided=spec)


def test_json_schema_error_and_forced_output_wins():
    assert json_schema_error(SCHEMA) is None
    assert "wat" in json_schema_error({"type": "wat"})
    assert "object" in json_schema_error(["not", "a", "schema"])
    # A forced output is replayed, not sampled: the grammar a caller adds by default is dropped.
    sp = SamplingParams(forced_output_ids=[5, 6], guided=Guided(json_object=True))
    assert sp.guided is None and sp.forced_output_ids == [5, 6]


def test_guided_without_a_tokenizer_fails_that_request_only(model):
    core = build_core(EngineConfig(num_kv_blocks=64, max_num_batched_tokens=64), model, None)
    core.add_request(req("plain", [5, 6, 7], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)))
    core.add_request(req("g", [5, 6, 7], SamplingParams(max_tokens=4, guided=Guided(json_object=True))))
    outs = run_all(core)
    assert len(tokens(outs["plain"])) == 4
    assert outs["g"][-1].finish_reason == "error"
    assert "tokenizer" in (outs["g"][-1].error or "")


def test_schema_numbers_end_within_nine_fraction_digits(model, tok, monkeypatch):
    # A random-weight model picks among the allowed tokens: after "x": 12. it may write digits for as long as
    # the grammar lets it. With the default step every object closes well within max_tokens.
    schema = {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 100}},
              "required": ["x"], "additionalProperties": False}

    def run(guided_schema):
        core = _core(model, tok)
        for k in range(12):
            core.add_request(req(f"n{k}", _prompt(tok), SamplingParams(
                max_tokens=22, temperature=1.5, seed=k, guided=Guided(json_schema=guided_schema))))
        return run_all(core)

    outs = run(schema)
    for k in range(12):
        assert outs[f"n{k}"][-1].finish_reason == "stop"
        text = _text(tok, outs[f"n{k}"])
        jsonschema.validate(json.loads(text), schema)
        assert "." not in text or len(text.split(".")[1]) <= 9 + 1  # fraction digits and the closing brace
    # The same requests with the numbers left free: some run to max_tokens mid-number (the bound is what closed them).
    monkeypatch.setattr(guided_module, "bounded_numbers", lambda s: s)
    free = run(schema)
    assert any(o[-1].finish_reason == "length" for o in free.values())


def test_bounded_numbers_leaves_data_explicit_steps_and_fine_bounds_alone():
    schema = {"type": "object", "properties": {
        "a": {"type": "number"}, "b": {"type": ["number", "null"], "maximum": 2.5},
        "c": {"type": "number", "multipleOf": 0.5}, "d": {"type": "number", "minimum": 0.12345678901},
        "e": {"const": {"type": "number"}}, "f": {"enum": [{"type": "number"}]}, "g": {"type": "integer"},
        "h": {"anyOf": [{"type": "number"}, {"type": "string"}]}}}
    p = bounded_numbers(schema)["properties"]
    assert p["a"]["multipleOf"] == NUMBER_STEP and p["b"]["multipleOf"] == NUMBER_STEP
    assert p["c"]["multipleOf"] == 0.5 and "multipleOf" not in p["d"] and "multipleOf" not in p["g"]
    assert p["e"] == {"const": {"type": "number"}} and p["f"] == {"enum": [{"type": "number"}]}
    assert p["h"]["anyOf"][0]["multipleOf"] == NUMBER_STEP
    assert json_schema_error(bounded_numbers(schema)) is None
