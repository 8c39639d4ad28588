"""``tether replay`` end to end in sim mode: tokenizer only when needed, closed loop from the trace, results.json."""

from __future__ import annotations

import json

import pytest

from tether import cli
from tether.engine import model_loader
from tether.workloads import metrics, report
from tether.workloads.replay import main
from tether.workloads.synth import synthesize


def _no_model(model):
    raise model_loader.ModelNotFoundError(f"model {model!r} not found")


def test_count_only_trace_uses_its_concurrency_and_no_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setattr(model_loader, "resolve_model_path", _no_model)  # loading a tokenizer would fail
    calls, summarize = [], metrics.summarize
    for mod in (metrics, report):
        monkeypatch.setattr(mod, "summarize", lambda run: calls.append(run) or summarize(run))
    trace = synthesize(3, seed=0, concurrency=2).save(tmp_path / "t.jsonl")
    args = [str(trace), "--kv-blocks", "4096", "--token-scale", "0.05", "--policies", "baseline,tether"]

    res = main(args + ["--out", str(tmp_path / "a")])
    assert len(calls) == 2  # one summary per policy
    meta = json.loads((tmp_path / "a" / "results.json").read_text())["meta"]
    assert meta["settings"]["concurrency"] == 2 and res["meta"]["settings"]["concurrency"] == 2
    # the trace's meta is stored once, nested, and does not overwrite the replay's own keys
    assert meta["trace"]["concurrency"] == 2 and meta["trace"]["profile"] == "swe-bench"
    assert meta["profile"] == "default@cpu" and "n_programs" not in meta

    assert main(args + ["--concurrency", "3", "--out", str(tmp_path / "b")])["meta"]["settings"]["concurrency"] == 3
    assert main(args + ["--rate", "1", "--out", str(tmp_path / "c")])["meta"]["settings"]["concurrency"] is None


def test_text_trace_is_tokenized_with_the_models_tokenizer(tmp_path, monkeypatch):
    class Tok:
        name_or_path, eos_token_id = "fake-tokenizer", 0

        def encode(self, text, add_special_tokens=False):
            return [1000 + ord(c) % 100 for c in text]

    monkeypatch.setattr(model_loader, "load_tokenizer", lambda model: Tok())
    msgs = [{"role": "user", "content": "list files"}, {"role": "assistant", "content": "thinking"},
            {"role": "user", "content": "go on"}, {"role": "assistant", "content": "done"}]
    (tmp_path / "c.json").write_text(json.dumps(msgs))
    res = main([str(tmp_path / "c.json"), "--kv-blocks", "256", "--out", str(tmp_path / "o")])
    assert res["meta"]["trace"]["tokenizer"] == "fake-tokenizer"
    assert res["policies"]["baseline"]["turns"] == 2
    assert res["policies"]["baseline"]["prompt_tokens"] == len("user: list files\n") * 2 + len("thinking") + \
        len("user: go on\n")


def test_cli_replay_reports_a_missing_model_without_a_traceback(tmp_path, capsys):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (tmp_path / "c.json").write_text(json.dumps(msgs))
    rc = cli.main(["replay", str(tmp_path / "c.json"), "--kv-blocks", "64", "--model", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["engine", "kernels", "runtime"])
def test_cli_bench_passes_its_options_through(what, monkeypatch):
    import importlib
    seen = []
    monkeypatch.setattr(importlib.import_module(f"tether.{what}.bench"), "main", seen.append)
    assert cli.main(["bench", what, "--json", "--seed", "1"]) == 0
    assert seen == [["--json", "--seed", "1"]]
