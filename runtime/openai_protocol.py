"""OpenAI's wire protocol as tether's HTTP server speaks it.

Request bodies (OpenAI's fields plus tether's extensions), errors in OpenAI's
shape, conversion of bodies to tether ``Request``/``SamplingParams``, prompt
rendering (``PromptRenderer``: chat template and tokenizer, with the checks that
refuse what can never fit or be encoded), and the ``logprobs`` and ``usage``
fields of responses. Nothing here touches the engine or the HTTP app;
``tether.runtime.server`` wires it together.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.responses import Response

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tether.engine import EngineError, Request, RequestMetrics, SamplingParams
from tether.engine.engine import chat_prompt_text, content_spans
from tether.engine.tool_key import tool_key
from tether.engine.guided import Guided, json_schema_error
from tether.runtime.chat_format import ChatFormatError, apply_tools_to_messages, tool_call_grammar, tool_names_of


# ---- errors -------------------------------------------------------------------------

class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> Response:
        # ASCII JSON: a message may quote the request, and a lone surrogate in it cannot be encoded as UTF-8.
        return Response(json.dumps(self.body()), status_code=self.status, headers=headers,
                        media_type="application/json")


def _from_validation(e: pydantic.ValidationError, whole: str | None = None) -> OpenAIError:
    """The first pydantic error as a 400, naming the offending field (``whole`` when it concerns no one field)."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or whole or ""
    msg = err.get("msg", str(e))
    return OpenAIError(f"{loc}: {msg}" if loc else msg, 400, loc or None)


def as_openai_error(e: Exception) -> OpenAIError:
    """Map what ``client.generate`` raises: a refused request is the caller's to fix, anything else is ours."""
    if isinstance(e, pydantic.ValidationError):
        return _from_validation(e)
    if isinstance(e, ValueError):  # RequestRejected, ChatFormatError
        return OpenAIError(str(e), 400)
    if isinstance(e, EngineError):
        return OpenAIError(str(e), 500, type="server_error")
    return OpenAIError(f"internal error: {type(e).__name__}: {e}", 500, type="server_error")


# ---- request bodies -----------------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any] | str] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: dict[str, str]


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema the reply must match (always enforced, ``strict`` or not)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: ``text``, ``json_object`` (any JSON object) or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ToolHintCall(BaseModel):
    """One entry of ``tool_hint`` given as a call: the tool's name and its arguments (an object, or
    OpenAI's JSON string), so that a shell call is keyed by its command's program."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str | None = None


ToolHint = str | ToolHintCall | list[str | ToolHintCall]


class GenerationBody(BaseModel):
    """Fields both endpoints share. Unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # extension
    program_id: str | None = None  # extension: the agent program this call belongs to
    turn: int | None = None  # extension: the call's index within its program
    is_last_turn: bool = False  # extension: no further turn of the program follows
    kv_reuse: bool = True  # extension: false stops this prompt reusing other prompts' KV (placed segments)
    tool_hint: ToolHint | None = Field(default=None, description=(
        "extension, needs program_id: the tools this reply's calls start, sent to the engine (its KV-pin TTL "
        "policy) when the reply finishes, in place of the calls parsed from the reply; names, or "
        "{\"name\", \"arguments\"} objects, each keyed by tether.engine.tool_key.tool_key (a shell call by its "
        "command's program: {\"name\": \"bash\", \"arguments\": {\"command\": \"cd x && pytest\"}} -> "
        "\"pytest\"); [] sends no hint, nor does a reply with is_last_turn"))


class ChatCompletionBody(GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None


class CompletionBody(GenerationBody):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse the JSON body ourselves, whatever the content type, so every failure gets an OpenAI error.

    >>> parse_body(b"[" * 5000 + b"]" * 5000, CompletionBody)
    Traceback (most recent call last):
    tether.runtime.openai_protocol.OpenAIError: the request body is nested too deeply
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenAIError(f"the request body is not valid JSON: {e}", 400) from None
    except RecursionError:
        raise OpenAIError("the request body is nested too deeply", 400) from None
    if not isinstance(data, dict):
        raise OpenAIError("the request body must be a JSON object", 400)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise _from_validation(e) from None
    except RecursionError:
        raise OpenAIError("the request body is nested too deeply", 400) from None


# ---- building engine requests -------------------------------------------------------

def chat_request(body: ChatCompletionBody) -> tuple[Request, list[str] | None, int | None]:
    """The engine request for a chat body, the tool names to parse for (None: no tools) and top_logprobs."""
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, BaseModel) else body.tool_choice
    try:
        messages = apply_tools_to_messages([m.model_dump(exclude_none=True) for m in body.messages], tools, choice)
    except ChatFormatError as e:
        raise OpenAIError(str(e), 400, str(e).split(":")[0].split(" ")[0]) from None  # e.g. "messages[2].role"
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError("top_logprobs needs logprobs=true", 400, "top_logprobs")
    k = (body.top_logprobs or 0) if body.logprobs else None
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    sampling = _sampling(body, max_tokens, k, _chat_grammar(body, tools, choice))
    try:
        request = Request(messages=messages, sampling=sampling, **_program_fields(body))
    except pydantic.ValidationError as e:
        raise _from_validation(e) from None
    names = tool_names_of(tools) if tools and choice != "none" else None
    return request, names, k


def completion_request(body: CompletionBody, renderer: PromptRenderer) -> Request:
    """The engine request for a legacy completions body (one prompt, text or token ids)."""
    if body.echo:
        raise OpenAIError("echo is not supported", 400, "echo")
    sampling = _sampling(body, 16 if body.max_tokens is None else body.max_tokens, body.logprobs)  # OpenAI's default
    ids = _completion_prompt(body.prompt, renderer, sampling.max_tokens)
    try:
        return Request(prompt_token_ids=ids, sampling=sampling, **_program_fields(body))
    except pydantic.ValidationError as e:
        raise _from_validation(e, "prompt") from None


def tool_hint(body: GenerationBody) -> list[str] | None:
    """The body's ``tool_hint`` as tool keys (``tool_key``; None when not given).

    >>> tool_hint(GenerationBody(program_id="p", tool_hint=["search", {"name": "bash", "arguments":
    ...     '{"command": "cd /x && pytest -q"}'}]))
    ['search', 'pytest']
    """
    if body.tool_hint is None:
        return None
    if body.program_id is None:
        raise OpenAIError("tool_hint needs program_id (the program whose reply calls the tools)", 400, "tool_hint")
    entries = body.tool_hint if isinstance(body.tool_hint, list) else [body.tool_hint]
    keys = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            keys.append(tool_key(entry))
            continue
        args = entry.arguments
        if isinstance(args, str):  # OpenAI's wire shape: a JSON object as a string
            try:
                args = json.loads(args) if args.strip() else None
            except json.JSONDecodeError:
                raise OpenAIError(f"tool_hint[{i}].arguments: not a JSON object", 400, "tool_hint") from None
        keys.append(tool_key(entry.name, args))
    return keys


def _response_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks for (``{"type": "object"}`` for json_object; None: text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise OpenAIError('response_format: type "json_schema" needs json_schema.schema (a JSON schema object)',
                          400, "response_format.json_schema")
    problem = json_schema_error(fmt.json_schema.schema_)
    if problem:
        raise OpenAIError(f"response_format.json_schema.schema: not a usable JSON schema ({problem})", 400,
                          "response_format.json_schema.schema")
    return fmt.json_schema.schema_


def _chat_grammar(body: ChatCompletionBody, tools: list[dict[str, Any]], choice: Any) -> Guided | None:
    """The grammar the reply is decoded under: the tools' call format, and/or ``response_format``'s schema.

    With tools offered (``tool_choice`` other than ``"none"``) every ``<tool_call>`` block is a valid call;
    ``"required"`` or a named function allow calls only; ``"auto"`` also allows a plain answer (a JSON
    value of the ``response_format`` schema when one is given).
    """
    schema = _response_schema(body.response_format)
    try:
        grammar = tool_call_grammar(tools, choice, body.parallel_tool_calls, schema) if tools else None
    except ChatFormatError as e:
        raise OpenAIError(str(e), 400, str(e).split(":")[0]) from None
    if grammar is None and schema is not None:
        grammar = Guided(json_schema=schema)
    return grammar


def _sampling(body: GenerationBody, max_tokens: int | None, logprobs: int | None,
              guided: Guided | None = None) -> SamplingParams:
    if body.n not in (None, 1):
        raise OpenAIError(f"n={body.n} is not supported; this server returns one choice (n=1)", 400, "n")
    fields: dict[str, Any] = {"max_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                              "top_k": body.top_k, "seed": body.seed, "logprobs": logprobs,
                              "stop": [body.stop] if isinstance(body.stop, str) else body.stop}
    try:
        return SamplingParams(ignore_eos=body.ignore_eos, guided=guided,
                              **{k: v for k, v in fields.items() if v is not None})
    except pydantic.ValidationError as e:
        raise _from_validation(e) from None


def _program_fields(body: GenerationBody) -> dict[str, Any]:
    fields: dict[str, Any] = {"program_id": body.program_id, "is_last_turn": body.is_last_turn}
    if not body.kv_reuse:  # only when turned off, so engines without reuse still serve
        fields["kv_reuse"] = False
    if body.turn is not None:  # only when given, so engines without turn indices still serve
        fields["turn"] = body.turn
    return fields


def _completion_prompt(prompt: Any, renderer: PromptRenderer, max_tokens: int) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise OpenAIError("batched prompts are not supported; send one prompt per request", 400, "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if renderer.tokenizer is None:
            raise OpenAIError("this engine has no tokenizer; send the prompt as a list of token ids", 400, "prompt")
        return renderer.encode(prompt, max_tokens, "prompt", add_special_tokens=True)
    return list(prompt)


# ---- rendering prompts --------------------------------------------------------------

MIN_CHARS_PER_TOKEN_BOUND = 16  # the least bound ``PromptRenderer`` assumes, whatever the vocabulary


def max_chars_per_token(tokenizer: Any) -> int:
    """A safe upper bound on the characters one token of ``tokenizer`` covers.

    The longest vocabulary entry, counted in its own alphabet (a byte-level BPE
    piece has a character per byte, never fewer than the text it decodes to),
    doubled for normalizers that shrink text (Unicode composition), and at
    least ``MIN_CHARS_PER_TOKEN_BOUND``. So a text of ``n`` characters is at
    least ``n / max_chars_per_token`` tokens. 256 when the vocabulary is unknown.
    """
    try:
        longest = max(map(len, tokenizer.get_vocab()))
    except Exception:  # no tokenizer, or one without a vocabulary to read
        return 256
    return max(MIN_CHARS_PER_TOKEN_BOUND, 2 * longest)


class PromptRenderer:
    """Chat messages and text prompts to prompt token ids, for the server's worker threads.

    Before tokenizing it refuses (``OpenAIError``, 400, naming the field) a
    text whose length alone proves it cannot fit: ``chars / chars_per_token``
    tokens at least, plus ``max_tokens``, over ``context_tokens`` (None: no
    check). A lone surrogate (``"\\ud800"`` in JSON, no Unicode text) and any
    failure of the chat template or the tokenizer are the request's fault: 400.

    Example::

        renderer = PromptRenderer(tokenizer, context_tokens=8192)
        request = renderer.chat(Request(messages=[{"role": "user", "content": "Hi"}]))  # now prompt_token_ids
    """

    def __init__(self, tokenizer: Any, context_tokens: int | None, chars_per_token: int | None = None):
        self.tokenizer, self.context_tokens = tokenizer, context_tokens
        self.chars_per_token = chars_per_token or (max_chars_per_token(tokenizer) if tokenizer is not None else 256)

    def check_length(self, chars: int, max_tokens: int, param: str) -> None:
        """Refuse a prompt of ``chars`` characters that cannot fit the context with ``max_tokens`` more."""
        if self.context_tokens is None:
            return
        least = -(-chars // self.chars_per_token)
        if least + max_tokens > self.context_tokens:
            raise OpenAIError(
                f"{param}: the prompt has {chars} characters, so at least {least} tokens (a token covers at most "
                f"{self.chars_per_token} characters here), which with max_tokens ({max_tokens}) exceeds the "
                f"model's context of {self.context_tokens} tokens; shorten the prompt or lower max_tokens",
                400, param, "context_length_exceeded")

    def chat(self, request: Request) -> Request:
        """``request`` with its messages rendered by the chat template and tokenized (unchanged without a
        tokenizer: the client renders)."""
        if request.messages is None or self.tokenizer is None:
            return request
        try:
            text = chat_prompt_text(self.tokenizer, request.messages)
        except RecursionError:
            raise OpenAIError("messages: nested too deeply to render", 400, "messages") from None
        except Exception as e:  # the template refused these messages (e.g. roles out of order)
            raise OpenAIError(f"messages: the chat template cannot render them: {_reason(e)}", 400,
                              "messages") from None
        if not isinstance(text, str):
            raise OpenAIError("messages: the chat template did not render text", 400, "messages")
        ids = self.encode(text, request.sampling.max_tokens, "messages", add_special_tokens=False,
                          locate=lambda: _surrogate_path(request.messages, "messages"))
        spans = content_spans(self.tokenizer, text, request.messages) if request.kv_reuse else None
        return request.model_copy(update={"prompt_token_ids": ids, "messages": None, "segment_spans": spans})

    def encode(self, text: str, max_tokens: int, param: str, add_special_tokens: bool,
               locate: Any = None) -> list[int]:
        """``text``'s token ids, after the length and Unicode checks (``param`` names the field in errors;
        ``locate()``, if given, says more precisely where a lone surrogate is)."""
        self.check_length(len(text), max_tokens, param)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            where = (locate() if locate is not None else None) or param
            raise OpenAIError(f"{where}: contains a lone surrogate (U+{ord(text[e.start]):04X}), which is not "
                              "Unicode text; send valid UTF-8", 400, param, "invalid_unicode") from None
        try:
            ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        except Exception as e:
            raise OpenAIError(f"{param}: the tokenizer cannot encode it: {_reason(e)}", 400, param) from None
        if not ids:
            raise OpenAIError(f"{param}: the prompt is empty; give at least one token", 400, param)
        return list(ids)


def _reason(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _surrogate_path(obj: Any, path: str) -> str | None:
    """Where in ``obj`` (messages) the first string with a lone surrogate is, e.g. ``messages[1].content``."""
    stack = [(obj, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return at
        elif isinstance(node, dict):
            stack.extend((v, f"{at}.{k}") for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(node))))
    return None


# ---- usage and logprobs -------------------------------------------------------------

def openai_usage(metrics: RequestMetrics | None, generated_tokens: int) -> dict[str, Any]:
    """OpenAI's ``usage`` for a finished request (``generated_tokens`` counts when the engine gave no metrics)."""
    prompt = metrics.prompt_tokens if metrics else 0
    completion = metrics.output_tokens if metrics else generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": metrics.prefix_hit_tokens if metrics else 0,
                                      "reused_tokens": metrics.reused_tokens if metrics else 0}}


class TokenText:
    """Text and raw bytes of single tokens, for logprobs (byte-level BPE pieces may be partial UTF-8)."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.byte_level = False
        if tokenizer is not None:
            pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(" a", add_special_tokens=False))
            self.byte_level = "Ġ" in "".join(pieces)
        self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        self._cache: dict[int, bytes] = {}  # token id -> bytes (at most the vocabulary)

    def bytes_of(self, token_id: int) -> bytes:
        b = self._cache.get(token_id)
        if b is None:
            b = self._cache[token_id] = self._bytes_of(token_id)
        return b

    def _bytes_of(self, token_id: int) -> bytes:
        if self.tok is None:
            return f"token_id:{token_id}".encode()
        if self.byte_level:
            piece = self.tok.convert_ids_to_tokens(token_id)
            if all(c in self._byte_of for c in piece):
                return bytes(self._byte_of[c] for c in piece)
        return self.tok.decode([token_id]).encode("utf-8")

    def text_of(self, token_id: int) -> str:
        return self.bytes_of(token_id).decode("utf-8", errors="replace")

    def entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        b = self.bytes_of(token_id)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _top(lp: dict[int, float], k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely (token id, logprob) pairs, most likely first."""
    return sorted(lp.items(), key=lambda kv: -kv[1])[:k]


def chat_logprobs(tt: TokenText, token_ids: list[int], lps: list[dict[int, float]], k: int) -> list[dict]:
    """OpenAI chat ``logprobs.content`` entries (special tokens such as end-of-turn carry no text: skipped)."""
    out = []
    for tid, lp in zip(token_ids, lps):
        if tid in tt.special:
            continue
        out.append({**tt.entry(tid, lp.get(tid, -9999.0)), "top_logprobs": [tt.entry(t, v) for t, v in _top(lp, k)]})
    return out


def completion_logprobs(tt: TokenText, token_ids: list[int], lps: list[dict[int, float]], k: int,
                        offset: int = 0) -> dict[str, list]:
    """Legacy completions ``logprobs``: parallel lists of tokens, their logprobs, top-k dicts and text offsets."""
    res: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for tid, lp in zip(token_ids, lps):
        if tid in tt.special:
            continue
        text = tt.text_of(tid)
        res["tokens"].append(text)
        res["token_logprobs"].append(lp.get(tid))
        res["top_logprobs"].append({tt.text_of(t): v for t, v in _top(lp, k)})
        res["text_offset"].append(offset)
        offset += len(text)
    return res
