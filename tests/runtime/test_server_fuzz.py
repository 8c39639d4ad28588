"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis on Hypothesis).

Every operation of ``/openapi.json`` (the chat and completion bodies are in
it) gets a fixed, small number of generated requests, valid and invalid
alike, against a real uvicorn server over the tiny random-weight model with
the default tokenizer. No request may get a 5xx, and afterwards the server
must still answer and hold no KV blocks.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from tether.engine import Engine, EngineConfig
from tether.engine.model_loader import load_tokenizer
from tether.runtime.bench_serve import running_server
from tether.runtime.client import LocalClient
from tether.runtime.server import create_app
from tiny_model import tiny_llama

EXAMPLES = 50  # per operation: 6 operations, valid and invalid requests (the positive and negative modes)


class _SchemaOnly(LocalClient):
    """Enough of a client to build the app whose schema is fuzzed (the schema does not depend on it)."""

    def __init__(self):
        self.tokenizer, self.model_name, self.policy = None, "tiny", "tether"


schema = schemathesis.openapi.from_dict(create_app(_SchemaOnly()).openapi())
schema.config.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")


@pytest.fixture(scope="module")
def server():
    tok = load_tokenizer("default")
    engine = Engine(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256), hf_model=tiny_llama(vocab_size=len(tok)),
                    tokenizer=tok)
    app = create_app(LocalClient(engine, "tiny"), max_body_bytes=1 << 20)
    with running_server(app) as base, requests.Session() as session:
        yield SimpleNamespace(base=base, engine=engine, session=session)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, server):
    if case.body is not None and isinstance(case.body, dict):
        # Generation is cut short on the tiny model, so the run stays within its time.
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(key), int) and case.body[key] > 8:
                case.body[key] = 8
    response = case.call(base_url=server.base, session=server.session, timeout=60)
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:2000])
    if response.status_code >= 400 and "application/json" in str(response.headers.get("content-type")):
        error = response.json()["error"]  # OpenAI's shape, whatever went wrong
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_the_server_is_healthy_after_fuzzing(server):
    assert httpx.get(f"{server.base}/health").json()["status"] == "ok"
    r = httpx.post(f"{server.base}/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    deadline = time.monotonic() + 10
    while (stats := server.engine.stats())["running"] or stats["waiting"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    assert stats["kv_blocks_used"] - stats["pinned_blocks"] == 0, stats
    server.engine.core.check_no_leaks()
