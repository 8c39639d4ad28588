"""The program table: the one owner of per-program state in the engine.

A program is an agent program's id and a few hints. Its lifecycle, driven by
the core: a turn arrives, the turn finishes, a tool call starts (the tool
hint), the program ends (its last turn finished, or ``end_program``). Queue
policies, the pin controller and the host tier ask this table; nothing else
keeps per-program state.

Example::

    table = ProgramTable()
    prog, call = table.turn_arrived("p1", now=0.0)      # the first turn: no tool call behind it
    table.turn_finished("p1", block_hashes=[...], service_s=0.4, now=0.4)
    table.tool_started("p1", ["pytest"], now=0.4)
    prog, call = table.turn_arrived("p1", now=3.1)      # call.keys == ["pytest"]: it took 2.7 s
    table.end("p1")
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Pin:
    """Blocks held for a program across its tool call, until ``expires_at``."""

    block_ids: list[int]
    created: float
    expires_at: float
    value: float = 0.0  # expected benefit; the least valuable pin ends first under pressure

    @property
    def num_blocks(self) -> int:
        return len(self.block_ids)


@dataclass
class ToolCall:
    """A tool call in progress: the predictor's keys, and when it started."""

    keys: list[str]
    started: float


@dataclass
class Program:
    program_id: str
    arrival: float                       # the first turn's arrival: program FCFS orders by it
    turns: int = 0                       # turns arrived so far
    in_flight: int = 0                   # turns arrived and not finished
    service_s: float = 0.0               # time its turns spent scheduled (first scheduled -> finished)
    last_turn_hashes: list[int] = field(default_factory=list)  # full blocks of its last finished turn
    tool_call: ToolCall | None = None    # the call it is waiting on, if any
    pin: Pin | None = None               # set through ``ProgramTable.set_pin`` (the pin controller)
    host_hashes: list[int] = field(default_factory=list)  # blocks it wants kept on the host tier
    last_active: float = 0.0             # last lifecycle event: idle programs are forgotten


class ProgramTable:
    """Program id -> ``Program``; entries live from the first turn to the program's end, or until
    the program has been idle too long (a client that never sends its last turn) or the table is
    over ``max_programs`` (the least recently active idle ones go first): see ``expire``."""

    def __init__(self, max_programs: int = 100_000) -> None:
        self.max_programs = max_programs
        self._programs: OrderedDict[str, Program] = OrderedDict()  # least recently active first
        self.longest_tool_s = 0.0  # longest tool call seen: the idle bound stays well above it
        self._pinned: dict[str, Program] = {}  # the subset holding a pin (pins are scanned every step)

    def get(self, program_id: str | None) -> Program | None:
        return None if program_id is None else self._programs.get(program_id)

    def turn_arrived(self, program_id: str, now: float) -> tuple[Program, ToolCall | None]:
        """A turn of ``program_id`` arrived; returns the program and the tool call it came back from."""
        prog = self._touch(program_id, now)
        call, prog.tool_call = prog.tool_call, None
        if call is not None:
            self.longest_tool_s = max(self.longest_tool_s, now - call.started)
        prog.turns += 1
        prog.in_flight += 1
        return prog, call

    def turn_finished(self, program_id: str, block_hashes: list[int], service_s: float,
                      now: float) -> Program | None:
        """A turn ended (finished, aborted or failed): remember its cached blocks for a pin."""
        prog = self._programs.get(program_id)
        if prog is not None:
            self._programs.move_to_end(program_id)
            prog.last_active = now
            prog.in_flight = max(0, prog.in_flight - 1)
            prog.service_s += service_s
            prog.last_turn_hashes = block_hashes
        return prog

    def tool_started(self, program_id: str, keys: list[str], now: float) -> Program:
        """The program's last turn ended in calls to tools with these predictor keys."""
        prog = self._touch(program_id, now)  # a program this engine has not served arrives now
        prog.tool_call = ToolCall(list(keys), now)
        return prog

    def _touch(self, program_id: str, now: float) -> Program:
        prog = self._programs.get(program_id)
        if prog is None:
            prog = self._programs[program_id] = Program(program_id, arrival=now)
        else:
            self._programs.move_to_end(program_id)
        prog.last_active = now
        return prog

    def expire(self, now: float, idle_s: float) -> list[Program]:
        """Programs to forget: idle (no turn in flight) for longer than ``idle_s``, or the least
        recently active idle ones while the table is over ``max_programs``. The caller releases
        what they held (``end``)."""
        out = []
        over = len(self._programs) - self.max_programs
        for prog in list(self._programs.values()):  # least recently active first: stop at the first keeper
            if prog.in_flight:
                continue
            if now - prog.last_active <= idle_s and over <= 0:
                break
            out.append(prog)
            over -= 1
        return out

    def end(self, program_id: str) -> Program | None:
        """The program is over: drop it; the caller has released what it held (pin, host blocks)."""
        self._pinned.pop(program_id, None)
        return self._programs.pop(program_id, None)

    def set_pin(self, prog: Program, pin: Pin | None) -> None:
        prog.pin = pin
        if pin is None:
            self._pinned.pop(prog.program_id, None)
        elif prog.program_id in self._programs:
            self._pinned[prog.program_id] = prog

    def arrival(self, program_id: str | None) -> float | None:
        prog = self.get(program_id)
        return None if prog is None else prog.arrival

    def is_pinned(self, program_id: str | None) -> bool:
        prog = self.get(program_id)
        return prog is not None and prog.pin is not None

    def pinned(self) -> list[Program]:
        """Programs holding a pin."""
        return list(self._pinned.values())

    def __len__(self) -> int:
        return len(self._programs)
