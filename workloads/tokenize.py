"""Token ids for a trace: real ids from text, or seeded synthetic ids for count-only turns.

Rendering (one rule, used everywhere in tether.workloads): a turn's appended
messages become plain text, one ``"<role>: <content>\\n"`` per message, and its
output is the answer text as written. Both are encoded without special tokens.
Why not the chat template: templates add their own system prompt and turn
markers (SmolLM's inserts a default system message), which would make the
appended count depend on the model and on the position in the conversation;
plain text is deterministic and cuts cleanly at turn boundaries.

    trace = tokenize_trace(trace, tokenizer)     # fills append/output ids and counts from text
    trace = synthetic_token_ids(trace, seed=0)   # fills ids for turns that only have counts

Without a tokenizer, loaders set counts with ``estimate_tokens`` (about 4
characters a token) so that every turn still has a size.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from .chunks import rescale_chunks
from .trace import Trace

CHARS_PER_TOKEN = 4.0  # rough English/code average for BPE tokenizers; only a stand-in


def message_text(content: Any) -> str:
    """A message's content as one string (OpenAI allows a string, null, or a list of parts).

    >>> message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    'ab'
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
                       for p in content)
    return str(content)


def render_messages(messages: list[dict[str, Any]]) -> str:
    """Appended messages as plain text: ``"<role>: <content>\\n"`` each.

    >>> render_messages([{"role": "tool", "content": "ok"}])
    'tool: ok\\n'
    """
    return "".join(f"{m.get('role', 'user')}: {message_text(m.get('content'))}\n" for m in messages)


def estimate_tokens(text: str, minimum: int = 0) -> int:
    """Token count guessed from characters (``ceil(len / 4)``), at least ``minimum``.

    >>> estimate_tokens("12345678"), estimate_tokens("", minimum=1)
    (2, 1)
    """
    return max(minimum, math.ceil(len(text) / CHARS_PER_TOKEN))


def tokenize_trace(trace: Trace, tokenizer: Any) -> Trace:
    """Encode every turn that has text; counts become the id counts. Count-only turns are kept.

    An empty answer still costs one token (the end-of-sequence the model emits), so it
    gets ``[eos_token_id]``. Returns a new trace; ``meta["tokenizer"]`` names the tokenizer.

        tok = AutoTokenizer.from_pretrained(path)
        t2 = tokenize_trace(load_trajectories("run.traj"), tok)
        t2.programs[0].turns[0].append_token_ids[:5]
    """
    texts: list[str] = []
    for p in trace.programs:
        for t in p.turns:
            if t.append_messages is not None:
                texts.append(render_messages(t.append_messages))
            if t.output_text is not None:
                texts.append(t.output_text)
    ids = iter(_encode_all(tokenizer, texts))
    eos = getattr(tokenizer, "eos_token_id", None)
    programs = []
    for p in trace.programs:
        turns = []
        for t in p.turns:
            upd: dict[str, Any] = {}
            if t.append_messages is not None:
                a = next(ids)
                upd.update(append_token_ids=a, append_tokens=len(a))
                if t.append_chunks is not None:  # counted before tokenizing: the same shape at the real count
                    upd["append_chunks"] = rescale_chunks(t.append_chunks, len(a))
            if t.output_text is not None:
                o = next(ids) or [eos if eos is not None else 0]
                upd.update(output_token_ids=o, output_tokens=len(o))
            turns.append(t.model_copy(update=upd) if upd else t)
        programs.append(p.model_copy(update={"turns": turns}))
    name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    return Trace(programs=programs, meta={**trace.meta, "tokenizer": str(name)})


def has_text(trace: Trace) -> bool:
    """Whether any turn has text for ``tokenize_trace`` to encode (count-only traces have none).

    >>> from tether.workloads.synth import synthesize
    >>> has_text(synthesize(2, seed=0))
    False
    """
    return any(t.append_messages is not None or t.output_text is not None for p in trace.programs for t in p.turns)


def synthetic_token_ids(trace: Trace, seed: int = 0, vocab_low: int = 1000, vocab_high: int = 40000) -> Trace:
    """Fill missing ids with uniform draws from ``[vocab_low, vocab_high)``, seeded per program and turn.

    Turns that already have ids keep them. The same (seed, program id, turn) always gives
    the same ids, so a replay sends identical prompts every time and a program's later
    turns extend its earlier ones (prefix caching sees the shared prefix).

    >>> from tether.workloads.synth import synthesize
    >>> t = synthetic_token_ids(synthesize(1, seed=3))
    >>> len(t.programs[0].turns[0].append_token_ids) == t.programs[0].turns[0].append_tokens
    True
    """
    if not 0 <= vocab_low < vocab_high:
        raise ValueError(f"need 0 <= vocab_low < vocab_high, got {vocab_low}, {vocab_high}")
    programs = []
    for p in trace.programs:
        pid = zlib.crc32(p.program_id.encode())
        turns = []
        for i, t in enumerate(p.turns):
            upd: dict[str, Any] = {}
            if t.append_token_ids is None:
                rng = np.random.default_rng([seed & 0xFFFFFFFF, pid, i, 0])
                upd["append_token_ids"] = rng.integers(vocab_low, vocab_high, t.append_tokens).tolist()
            if t.output_token_ids is None:
                rng = np.random.default_rng([seed & 0xFFFFFFFF, pid, i, 1])
                upd["output_token_ids"] = rng.integers(vocab_low, vocab_high, t.output_tokens).tolist()
            turns.append(t.model_copy(update=upd) if upd else t)
        programs.append(p.model_copy(update={"turns": turns}))
    meta = {**trace.meta, "synthetic_token_ids": {"seed": seed, "vocab": [vocab_low, vocab_high]}}
    return Trace(programs=programs, meta=meta)


def _encode_all(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    if callable(tokenizer):  # Hugging Face tokenizers encode a batch in one call (fast, in Rust)
        out = tokenizer(texts, add_special_tokens=False)
        return [list(x) for x in out["input_ids"]]
    return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
