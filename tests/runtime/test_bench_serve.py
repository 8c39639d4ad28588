"""``tether bench serve`` for a couple of seconds on the tiny model: no errors, every KV block free after."""

from __future__ import annotations

import json

from tether.engine import Engine, EngineConfig
from tether.engine.model_loader import load_tokenizer
from tether.runtime import bench_serve
from tiny_model import tiny_llama


def test_a_short_loopback_load_has_no_errors_and_frees_every_block():
    tok = load_tokenizer("default")
    engine = Engine(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256),
                    hf_model=tiny_llama(vocab_size=len(tok)), tokenizer=tok)
    r = bench_serve.run_bench(engine, clients=4, seconds=2, max_tokens=4, model_name="tiny")
    assert r["errors"] == 0 and r["error_samples"] == [], r["error_samples"]
    assert r["ok"] >= 4 and r["requests"] == r["ok"] and r["completion_tokens"] > 0
    assert r["kv_blocks_free_after"] and r["kv_blocks_held_after"] == 0
    assert r["engine_after"]["running"] == 0 and r["engine_after"]["waiting"] == 0
    assert 0 < r["ttft_s"]["p50"] <= r["latency_s"]["p50"] <= r["latency_s"]["p99"]
    assert r["health_s"]["n"] >= 1 and r["health_s"]["errors"] == 0
    assert r["machine"]["cpu_model"] and r["machine"]["cpu_count"] >= 1
    json.dumps(r)  # the --json output


def test_the_cli_reports_json_and_fails_on_errors(monkeypatch, capsys, tmp_path):
    from tether.cli import main

    result = {"errors": 0, "kv_blocks_free_after": True}
    seen = {}

    def fake(engine, clients, seconds, max_tokens, model_name):
        seen.update(clients=clients, seconds=seconds, max_tokens=max_tokens, model=model_name)
        return dict(result, elapsed_s=seconds)

    class FakeEngine:
        def __init__(self, config):
            self.config = config
            self.core = type("Core", (), {"pool": type("Pool", (), {"num_blocks": 9})()})()

    monkeypatch.setattr(bench_serve, "run_bench", fake)
    monkeypatch.setattr(bench_serve, "Engine", FakeEngine)
    out = tmp_path / "r" / "result.json"
    assert main(["bench", "serve", "--clients", "3", "--seconds", "1.5", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert seen == {"clients": 3, "seconds": 1.5, "max_tokens": 16, "model": "default"}
    assert printed == json.loads(out.read_text()) and printed["kv_blocks_total"] == 9
    assert printed["command"] == "tether bench serve --clients 3 --seconds 1.5 --json --out " + str(out)
    result["errors"] = 1
    assert main(["bench", "serve", "--seconds", "1", "--json"]) == 1
