"""Incremental detokenization with stop strings, one per request, in the front end.

Text is re-decoded from the output ids each step and the new part emitted;
an incomplete UTF-8 character, and any tail that could still grow into a stop
string, is held back until the next token settles it.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    """Example::

        detok = Detokenizer(tokenizer, stop=["\\n\\n"])
        delta, hit_stop = detok.update([1234], final=False)
    """

    def __init__(self, tokenizer: Any, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = list(stop or [])
        self.ids: list[int] = []
        self.text = ""  # emitted so far

    def update(self, new_ids: list[int], final: bool, skip_last: bool = False) -> tuple[str, bool]:
        """Add ``new_ids``; return (new text, whether a stop string ended it). ``skip_last``: the
        newest id is an eos / stop token, not part of the text."""
        self.ids += new_ids
        if self.tokenizer is None:
            return "", False
        ids = self.ids[:-1] if skip_last else self.ids
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        hit = False
        if self.stop:
            found = [i for i in (full.find(s) for s in self.stop) if i >= 0]
            if found:
                full, hit, final = full[:min(found)], True, True
        if not final:
            if full.endswith("\ufffd"):
                full = full.rstrip("\ufffd")
            hold = max((len(s) for s in self.stop), default=1) - 1
            if hold:
                full = full[:max(len(self.text), len(full) - hold)]
        delta = full[len(self.text):]
        self.text = full
        return delta, hit
