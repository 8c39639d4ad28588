"""Guided (grammar-constrained) decoding: a per-request grammar applied as a token mask.

The grammar engine is llguidance (JSON schema, regex, Lark with embedded JSON).
A request names its grammar in ``SamplingParams.guided``; the sampler keeps one
matcher per request, masks the request's logits row before sampling, and
advances the matcher with the chosen token. Compiling a grammar happens once per
distinct grammar (a cached matcher is copied for each request), and the mask for
a request's next token is computed in a background thread while the model runs
the next forward pass.

Example::

    sp = SamplingParams(max_tokens=64, guided=Guided(json_schema={"type": "object",
                        "properties": {"city": {"type": "string"}}, "required": ["city"]}))
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import llguidance
import llguidance.hf
import torch
from pydantic import BaseModel, ConfigDict, model_validator

# One JSON layout, json.dumps' (", " and ": "; no free whitespace): what models most often write, and a small
# model given free whitespace may emit newlines forever.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# A JSON number's digits are otherwise unbounded, and a small model can write zeros after a decimal point until
# max_tokens cuts the object off (seen: "2380.000000000000012902..."). A schema number that sets no multipleOf of
# its own is held to 9 fraction digits and plain notation (llguidance enforces multipleOf in the grammar).
NUMBER_STEP = 1e-9
_SCHEMA_DATA_KEYS = frozenset({"const", "enum", "default", "examples"})  # values there are data, not schemas


class GuidedDecodingError(ValueError):
    """A grammar that cannot be compiled, or a request whose grammar left no token to pick."""


class Guided(BaseModel):
    """One grammar for a request's output: exactly one of the fields.

    Example::

        Guided(json_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
        Guided(json_object=True)                      # any JSON object
        Guided(regex=r"(yes|no)")
        Guided(lark='start: "<a>" %json {"type": "object"} "</a>"')

    The grammar is checked when the value is built: a bad schema, regex or Lark
    grammar raises a ``ValueError`` that quotes llguidance's reason.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    regex: str | None = None
    lark: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Guided":
        given = [k for k in ("json_schema", "regex", "lark") if getattr(self, k) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise ValueError("guided: give exactly one of json_schema, json_object, regex, lark "
                             f"(got {', '.join(given) or 'none'})")
        try:
            _checked(self.grammar())
        except GuidedDecodingError:
            raise
        except Exception as e:  # llguidance's own errors for unparsable input
            raise GuidedDecodingError(f"guided: invalid grammar: {e}") from None
        return self

    def grammar(self) -> str:
        """The llguidance grammar text (equal specs give equal text: the compile cache's key)."""
        if self.json_schema is not None:
            return _json_grammar(json.dumps({**bounded_numbers(self.json_schema), "x-guidance": JSON_OPTIONS}))
        if self.json_object:
            return _json_grammar(json.dumps({"type": "object", "x-guidance": JSON_OPTIONS}))
        if self.regex is not None:
            return llguidance.LLMatcher.grammar_from_regex(self.regex)
        return llguidance.LLMatcher.grammar_from_lark(self.lark or "")


def bounded_numbers(schema: Any) -> Any:
    """``schema`` with every ``number`` that has no ``multipleOf`` given ``multipleOf: NUMBER_STEP``.

    Example::

        bounded_numbers({"type": "object", "properties": {"x": {"type": "number"}}})
        # {"type": "object", "properties": {"x": {"type": "number", "multipleOf": 1e-09}}}
    """
    if isinstance(schema, list):
        return [bounded_numbers(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _SCHEMA_DATA_KEYS else bounded_numbers(v) for k, v in schema.items()}
    types = out.get("type")
    numeric = types == "number" or (isinstance(types, list) and "number" in types)
    if numeric and "multipleOf" not in out and all(_on_step(out.get(k)) for k in _BOUND_KEYS):
        out["multipleOf"] = NUMBER_STEP
    return out


_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _on_step(bound: Any) -> bool:
    """A bound finer than the step would leave llguidance no multiple to start or end at: keep such numbers free."""
    if not isinstance(bound, (int, float)) or isinstance(bound, bool):
        return True
    scaled = bound / NUMBER_STEP
    return abs(scaled - round(scaled)) < 1e-3


@lru_cache(maxsize=256)
def _json_grammar(schema_text: str) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema_text)
    except Exception as e:  # llguidance raises ValueError or its own types for malformed schemas
        raise GuidedDecodingError(f"guided: invalid JSON schema: {e}") from None


@lru_cache(maxsize=256)
def _checked(grammar: str) -> None:
    """Compile ``grammar`` without a tokenizer; raise naming the problem (cached: checked once)."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GuidedDecodingError("guided: invalid grammar: " + "; ".join(m.strip() for m in messages))


def json_schema_error(schema: Any) -> str | None:
    """Why llguidance cannot use ``schema`` as a JSON schema, or None when it can.

    Example::

        json_schema_error({"type": "wat"})   # "guided: invalid grammar: Invalid type: wat"
    """
    if not isinstance(schema, dict):
        return f"a JSON schema must be an object, got {type(schema).__name__}"
    try:
        Guided(json_schema=schema)
    except ValueError as e:
        return str(e).split("\n", 1)[-1] if "validation error" in str(e) else str(e)
    return None


_tokenizers: dict[tuple[int, int], llguidance.LLTokenizer] = {}
_tokenizers_lock = threading.Lock()


def llg_tokenizer(hf_tokenizer: Any, n_vocab: int) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face fast tokenizer, built once (about a second) and cached.

    ``n_vocab`` is the model's logits width (it may exceed the tokenizer's entries).
    """
    key = (id(hf_tokenizer), n_vocab)
    with _tokenizers_lock:
        tok = _tokenizers.get(key)
        if tok is None:
            try:
                tok = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=n_vocab)
            except ValueError as e:
                raise GuidedDecodingError(f"guided decoding needs a fast (Rust) Hugging Face tokenizer: {e}") from None
            _tokenizers[key] = tok
    return tok


@dataclass
class _State:
    matcher: llguidance.LLMatcher
    mask: torch.Tensor  # [1, words] int32: bit t of the row is 1 when token t may come next
    ready: Future | None = None  # the mask being computed in the background


class GrammarStates:
    """Per-request matchers for one sampler: masks rows, consumes tokens, precomputes next masks.

    Example::

        states = GrammarStates(hf_tokenizer)
        states.mask_logits(logits_rows, ["r1"], [guided])   # in place: disallowed tokens -> -inf
        states.consume({"r1": token_id})                    # then next masks compute in the background
        states.forget("r1")
    """

    def __init__(self, hf_tokenizer: Any, cache_size: int = 128):
        self.hf_tokenizer = hf_tokenizer
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()  # grammar -> pristine matcher
        self._cache_size = cache_size
        self._states: dict[str, _State] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._shifts = torch.arange(32, dtype=torch.int32)

    def forget(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def _state(self, request_id: str, guided: Guided, n_vocab: int) -> _State:
        st = self._states.get(request_id)
        if st is None:
            if self.hf_tokenizer is None:
                raise GuidedDecodingError("guided decoding needs the engine's tokenizer; this engine has none")
            grammar = guided.grammar()
            base = self._compiled.get(grammar)
            if base is None:
                base = llguidance.LLMatcher(llg_tokenizer(self.hf_tokenizer, n_vocab), grammar)
                if base.is_error():
                    raise GuidedDecodingError(f"guided: grammar does not compile: {base.get_error()}")
                self._compiled[grammar] = base
                if len(self._compiled) > self._cache_size:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(grammar)
            st = _State(base.deep_copy(), torch.full((1, (n_vocab + 31) // 32), -1, dtype=torch.int32))
            self._fill(st)
            self._states[request_id] = st
        elif st.ready is not None:
            st.ready.result()  # the background mask; raises what the fill raised
            st.ready = None
        return st

    @staticmethod
    def _fill(st: _State) -> None:
        row = st.mask[0]
        st.matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())

    def mask_logits(self, rows: torch.Tensor, request_ids: list[str], guided: list[Guided]) -> None:
        """Set ``rows[i, t] = -inf`` for every token ``t`` request ``i``'s grammar forbids next."""
        n_vocab = rows.shape[-1]
        masks = []
        for rid, g in zip(request_ids, guided):
            st = self._state(rid, g, n_vocab)
            if st.matcher.is_error():
                raise GuidedDecodingError(f"request {rid}: guided decoding failed: {st.matcher.get_error()}")
            masks.append(st.mask)
        words = torch.cat(masks).to(rows.device)
        allowed = ((words.unsqueeze(-1) >> self._shifts.to(rows.device)) & 1).view(len(masks), -1)[:, :n_vocab]
        rows.masked_fill_(allowed == 0, float("-inf"))

    def consume(self, tokens: dict[str, int]) -> None:
        """Advance each request's matcher by its emitted token, then start computing its next mask."""
        states = []
        for rid, tok in tokens.items():
            st = self._states[rid]
            if not st.matcher.consume_token(tok):
                raise GuidedDecodingError(f"request {rid}: token {tok} breaks its grammar: {st.matcher.get_error()}")
            states.append(st)
        if not states:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-grammar")
        # One job for the batch: it runs while the runner prepares and runs the next forward pass.
        job = self._pool.submit(lambda: [self._fill(s) for s in states])
        for st in states:
            st.ready = job
