"""What both replay modes share: settings, and each turn's exact prompt and output tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tether.workloads.trace import Trace


@dataclass
class ReplaySettings:
    """How to replay: the engine's pool and budget, arrivals, and the time scale.

    ``concurrency`` set: a closed loop keeping that many programs in flight;
    else programs arrive at their ``arrival_s`` (times ``time_scale``). ``stream``: a turn
    with chunk arrivals is prefilled as they come (sim mode); False: wait-for-all, the turn
    is sent whole at its last chunk's arrival (real mode always waits for all, for now).
    """

    kv_blocks: int
    host_kv_blocks: int | None = None  # host-memory tier for policies that use one (None: kv_blocks; 0: none)
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    concurrency: int | None = None
    time_scale: float = 1.0
    seed: int = 0
    stream: bool = True
    stream_min_chunk: int = 1  # an open prompt is prefilled once this many tokens wait (EngineConfig)

    def as_dict(self) -> dict:
        return asdict(self)


class TurnFeeder:
    """Turn ``k`` of a program: prompt = every earlier turn's appended and output tokens,
    plus turn ``k``'s appended tokens; output = the recorded output tokens.

    Count-only traces get deterministic synthetic token ids first (seeded).
    """

    def __init__(self, trace: Trace, seed: int = 0):
        if any(t.append_token_ids is None or t.output_token_ids is None for p in trace.programs for t in p.turns):
            from tether.workloads.tokenize import synthetic_token_ids
            trace = synthetic_token_ids(trace, seed=seed)
        self.trace = trace
        self._history: dict[int, tuple[int, list[int]]] = {}  # program -> (turns consumed, tokens)

    def turn_tokens(self, program_index: int, turn_index: int) -> tuple[list[int], list[int]]:
        turns = self.trace.programs[program_index].turns
        done, hist = self._history.get(program_index, (0, []))
        if turn_index < done:
            raise ValueError("turns are fed in order")
        for t in turns[done:turn_index]:
            hist = hist + t.append_token_ids + t.output_token_ids
        prompt = hist + turns[turn_index].append_token_ids
        if turn_index == len(turns) - 1:
            self._history.pop(program_index, None)  # the program ends: drop its history
        else:
            self._history[program_index] = (turn_index, hist)
        return prompt, list(turns[turn_index].output_token_ids)

    def expected_prompt_tokens(self, program_index: int, turn_index: int) -> int:
        turns = self.trace.programs[program_index].turns
        return sum(t.append_tokens + t.output_tokens for t in turns[:turn_index]) + turns[turn_index].append_tokens
