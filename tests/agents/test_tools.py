"""The @tool decorator: schema derivation, validation, invocation, pickling."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest
from pydantic import BaseModel
from ray import cloudpickle

from tether.agents.tools import Tool, ToolArgumentError, ToolOutput, tool


class Point(BaseModel):
    """A point in the plane."""

    x: float
    y: float = 0.0


@tool
def add(a: int, b: int = 1) -> int:
    """Add two integers.

    This second paragraph is not part of the description.

    Args:
        a: the first addend.
        b (int): the second addend,
            defaulting to one.

    Returns:
        The sum.
    """
    return a + b


@tool(name="plot", timeout_s=5.0)
async def draw(points: list[Point], labels: dict[str, str] | None = None, title: str = "") -> Point:
    """Return the centroid of some points."""
    await asyncio.sleep(0)
    n = len(points)
    return Point(x=sum(p.x for p in points) / n, y=sum(p.y for p in points) / n)


@tool
def count(points: list[Point]) -> int:
    """Count points (Point appears only in the annotation)."""
    return len(points)


@tool
def explode(message: str) -> str:
    """Always fails."""
    raise RuntimeError(message)


def params(t: Tool) -> dict:
    return t.openai_schema()["function"]["parameters"]


# -- schema -------------------------------------------------------------------


def test_name_description_and_openai_shape():
    schema = add.openai_schema()
    assert schema["type"] == "function"
    assert schema["function"]["name"] == "add"
    assert schema["function"]["description"] == "Add two integers."
    assert set(schema["function"]) == {"name", "description", "parameters"}


def test_required_defaults_and_docstring_descriptions():
    p = params(add)
    assert p["type"] == "object"
    assert p["required"] == ["a"]
    assert p["properties"]["a"] == {"type": "integer", "description": "the first addend."}
    assert p["properties"]["b"]["default"] == 1
    # A continuation line is joined; the "(int)" type annotation is dropped.
    assert p["properties"]["b"]["description"] == "the second addend, defaulting to one."
    assert "title" not in p and "title" not in p["properties"]["a"]


def test_optional_list_dict_and_model_params():
    assert draw.name == "plot" and draw.timeout_s == 5.0
    p = params(draw)
    assert p["required"] == ["points"]
    assert p["properties"]["points"]["type"] == "array"
    ref = p["properties"]["points"]["items"]["$ref"]
    assert ref == "#/$defs/Point"
    assert p["$defs"]["Point"]["required"] == ["x"]
    assert p["$defs"]["Point"]["description"] == "A point in the plane."
    labels = p["properties"]["labels"]
    assert {"type": "null"} in labels["anyOf"] and labels["default"] is None
    assert {"type": "object", "additionalProperties": {"type": "string"}} in labels["anyOf"]
    # A parameter literally named "title" survives the title stripping.
    assert p["properties"]["title"] == {"type": "string", "default": ""}


def test_tool_call_syntax_variants():
    def greet(name: str) -> str:
        return f"hi {name}"

    t = tool(greet, name="hello", description="Says hi.")
    assert (t.name, t.description, t("bo")) == ("hello", "Says hi.", "hi bo")
    assert tool(greet).description == ""  # no docstring


def test_var_args_rejected():
    with pytest.raises(TypeError, match="cannot be described"):
        tool(lambda *args: None)


# -- validation -----------------------------------------------------------------


def test_validate_coerces_and_keeps_models():
    assert add.validate({"a": "3"}) == {"a": 3, "b": 1}
    assert add.validate('{"a": 2, "b": 5}') == {"a": 2, "b": 5}
    kwargs = draw.validate({"points": [{"x": 1}]})
    assert isinstance(kwargs["points"][0], Point)


def test_validate_errors_are_clear():
    with pytest.raises(ToolArgumentError) as e:
        add.validate({"a": 1, "b": "x", "c": 0})
    msg = str(e.value)
    assert msg.startswith("invalid arguments for tool 'add': ")
    assert "b: Input should be a valid integer" in msg
    assert "c: Extra inputs are not permitted" in msg
    with pytest.raises(ToolArgumentError, match="a: Field required"):
        add.validate({})
    with pytest.raises(ToolArgumentError, match="not valid JSON"):
        add.validate("{oops")


# -- invoke ---------------------------------------------------------------------


async def test_invoke_sync_runs_in_a_thread():
    seen = {}

    @tool
    def where() -> str:
        """Report the thread."""
        seen["thread"] = threading.current_thread()
        return "ok"

    out = await where.invoke({})
    assert out == "ok" and out.is_error is False
    assert seen["thread"] is not threading.main_thread()


async def test_invoke_async_and_result_rendering():
    assert await add.invoke({"a": 2, "b": 3}) == "5"
    assert await draw.invoke({"points": [{"x": 0, "y": 0}, {"x": 2, "y": 4}]}) == '{"x":1.0,"y":2.0}'

    @dataclass
    class Row:
        k: str

    @tool
    def misc(kind: str) -> object:
        return {"dict": {"a": [1, None]}, "none": None, "dc": Row("v")}[kind]

    assert await misc.invoke({"kind": "dict"}) == '{"a":[1,null]}'
    assert await misc.invoke({"kind": "none"}) == "null"
    assert await misc.invoke({"kind": "dc"}) == '{"k":"v"}'


async def test_invalid_arguments_come_back_as_text():
    out = await add.invoke({"a": 1, "b": "x"})
    assert isinstance(out, str) and out.is_error
    assert out.startswith("error: invalid arguments for tool 'add': b: Input should be a valid integer")


async def test_raising_tool_comes_back_as_text():
    out = await explode.invoke({"message": "boom"})
    assert out == "error: RuntimeError: boom" and out.is_error


# -- pickling -------------------------------------------------------------------


async def test_cloudpickle_round_trip():
    offset = 10

    @tool(timeout_s=3)
    def shifted(a: int) -> int:
        """Add a captured offset.

        Args:
            a: the input.
        """
        return a + offset

    for t, args, expected in [(add, {"a": 1}, "2"), (draw, {"points": [{"x": 4}]}, '{"x":4.0,"y":0.0}'),
                              (shifted, {"a": 1}, "11"), (count, {"points": [{"x": 1}]}, "1")]:
        copy = cloudpickle.loads(cloudpickle.dumps(t))
        assert isinstance(copy, Tool)
        assert copy.openai_schema() == t.openai_schema()
        assert copy.timeout_s == t.timeout_s
        assert await copy.invoke(args) == expected


def test_tool_output_pickles_its_flag():
    out = cloudpickle.loads(cloudpickle.dumps(ToolOutput("error: x", is_error=True)))
    assert out == "error: x" and out.is_error


async def test_tool_output_returned_by_a_tool_passes_through():
    @tool
    def checked(fail: bool) -> ToolOutput:
        """Report with a flag and metadata."""
        return ToolOutput("bad" if fail else "fine", is_error=fail, metadata={"code": int(fail)})

    out = await checked.invoke({"fail": True})
    assert out == "bad" and out.is_error and out.metadata == {"code": 1}
    out = await checked.invoke({"fail": False})
    assert out == "fine" and not out.is_error and out.metadata == {"code": 0}
    assert (await add.invoke({"a": 1})).metadata is None


def test_tool_output_pickles_its_metadata_and_tools_their_attributes():
    out = cloudpickle.loads(cloudpickle.dumps(ToolOutput("x", metadata={"isolation": "bwrap"})))
    assert out.metadata == {"isolation": "bwrap"} and not out.is_error
    t = tool(lambda a: a, name="ident")
    t.sandbox = {"workdir": "/w"}  # attributes set after construction travel too
    copy = cloudpickle.loads(cloudpickle.dumps(t))
    assert copy.sandbox == {"workdir": "/w"} and copy.name == "ident"
