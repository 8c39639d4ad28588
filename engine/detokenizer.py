"""Incremental detokenization with stop strings.

Text is re-decoded from the output ids each step and the new part emitted;
an incomplete UTF-8 character, and any tail that could still grow into a stop
string, is held back until the next token settles it.
"""

from __future__ import annotations

from typing import Any

from tether.engine.sequence import Sequence


class Detokenizer:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def update(self, seq: Sequence, final: bool, skip_last: bool = False) -> tuple[str, bool]:
        """Return (new text, whether a stop string ended it). Updates ``seq.text``."""
        if self.tokenizer is None:
            return "", False
        ids = seq.output_token_ids[:-1] if skip_last else seq.output_token_ids
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        stops = seq.sampling.stop if seq.sampling.forced_output_ids is None else []
        hit = False
        if stops:
            found = [i for i in (full.find(s) for s in stops) if i >= 0]
            if found:
                full, hit, final = full[:min(found)], True, True
        if not final:
            if full.endswith("\ufffd"):
                full = full.rstrip("\ufffd")
            hold = max((len(s) for s in stops), default=1) - 1
            if hold:
                full = full[:max(len(seq.text), len(full) - hold)]
        delta = full[len(seq.text):]
        seq.text = full
        return delta, hit
