"""The trace-format registry: a format registered from outside the loaders is detected and loaded
by ``detect_format`` / ``load_trajectories`` with no edit to them."""

from __future__ import annotations

import pytest

from tether.workloads.loaders import TRACE_FORMATS, FileContent, TraceFormat, detect_format, load_trajectories
from tether.workloads.trace import Program, ToolCallRecord, Trace, TraceError, Turn

# A toy format: "# toy" on the first line, then one turn per line:
#   PROGRAM APPEND_TOKENS OUTPUT_TOKENS [TOOL SECONDS]
TOY = """# toy
a 100 10 ls 0.5
a 20 5
b 300 30 pytest 2.0
b 40 8 cat 0.1
b 10 4
"""


def _is_toy(path, content: FileContent) -> bool:
    with path.open() as f:
        return f.readline().strip() == "# toy"


def _load_toy(path, content: FileContent, seed: int) -> Trace:
    turns: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(path.read_text().splitlines()[1:], 2):
        pid, append, output, *tool = line.split()
        if len(tool) not in (0, 2):
            raise TraceError(f"{path}:{lineno}: expected PROGRAM APPEND OUTPUT [TOOL SECONDS]")
        record = ToolCallRecord(name=tool[0], duration_s=float(tool[1])) if tool else None
        turns.setdefault(pid, []).append(Turn(append_tokens=int(append), output_tokens=int(output), tool=record))
    return Trace(programs=[Program(program_id=f"{path.stem}/{pid}", source=f"toy:{path.name}", turns=ts)
                           for pid, ts in turns.items()])


@pytest.fixture
def toy_format():
    TRACE_FORMATS.register("toy", TraceFormat(suffixes=(".toy",), description="a toy trace (.toy)",
                                              detect=_is_toy, load=_load_toy))
    yield
    TRACE_FORMATS.unregister("toy")


def test_a_registered_format_is_detected_and_loaded(tmp_path, toy_format):
    f = tmp_path / "runs.toy"
    f.write_text(TOY)
    assert detect_format(f) == "toy"
    trace = load_trajectories(f)
    assert [p.program_id for p in trace.programs] == ["runs/a", "runs/b"]
    a, b = trace.programs
    assert [(t.append_tokens, t.output_tokens) for t in a.turns] == [(100, 10), (20, 5)]
    assert a.turns[0].tool.name == "ls" and a.turns[0].tool.duration_s == 0.5 and a.turns[1].tool is None
    assert [t.tool.name if t.tool else None for t in b.turns] == ["pytest", "cat", None]
    assert trace.meta["formats"] == ["toy"]


def test_a_registered_format_joins_folder_loads_and_errors(tmp_path, toy_format):
    (tmp_path / "runs.toy").write_text(TOY)
    (tmp_path / "other.toy").write_text("not a toy\n")
    with pytest.raises(TraceError, match=r"other\.toy: unknown trajectory format \(content is none of: toy\)"
                                         r".*, a toy trace \(\.toy\)"):
        load_trajectories(tmp_path)
    (tmp_path / "other.toy").unlink()
    assert len(load_trajectories(tmp_path).programs) == 2  # the folder load reads .toy files too


def test_unregistered_format_is_unknown_again(tmp_path):
    f = tmp_path / "runs.toy"
    f.write_text(TOY)
    assert "toy" not in TRACE_FORMATS
    with pytest.raises(TraceError, match=r"runs\.toy: unknown trajectory format \(extension '\.toy'\)"):
        detect_format(f)


def test_builtin_formats_are_registered_in_detection_order():
    from tether.workloads.loaders.formats import ordered
    assert ordered() == ["tether", "openhands", "swe-agent", "mini-swe-agent", "tracelab-rounds", "tracelab-csv",
                         "swe-smith", "openai-messages"]
