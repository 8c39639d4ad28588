"""The policy preset reaches every engine a user starts: ``Runtime(policy=...)`` and ``--policy`` on the CLI.

No Ray cluster and no model: the configs and parsers are checked as built.
"""

from __future__ import annotations

import pytest

from tether.agents import Runtime
from tether.cli import build_parser
from tether.engine.policies import DEFAULT_POLICY, POLICY_PRESETS


def _preset_fields_of(cfg) -> dict:
    return {k: getattr(cfg, k) for k in POLICY_PRESETS.get(cfg.policy).fields}


def test_runtime_passes_the_policy_into_every_replicas_config():
    assert Runtime().policy == DEFAULT_POLICY == Runtime().engine_config().policy == "tether"
    rt = Runtime(policy="baseline", engine={"num_kv_blocks": 64})
    cfg = rt.engine_config()
    assert rt.policy == cfg.policy == "baseline" and cfg.num_kv_blocks == 64
    assert _preset_fields_of(cfg) == POLICY_PRESETS.get("baseline").fields  # the preset filled the rest
    cfg = Runtime(engine={"policy": "continuum-fixed"}).engine_config()
    assert cfg.policy == "continuum-fixed" and _preset_fields_of(cfg) == POLICY_PRESETS.get("continuum-fixed").fields
    assert Runtime(policy="tether", engine={"policy": "baseline"}).engine_config().policy == "tether"  # kwarg wins


def test_runtime_rejects_an_unknown_policy_before_starting():
    with pytest.raises(ValueError, match="baseline"):  # the message lists the known presets
        Runtime(policy="nope")


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["run", "x.py:agent"]])
def test_policy_option_on_serve_demo_and_run(command, capsys):
    parser = build_parser()
    assert parser.parse_args(command).policy == DEFAULT_POLICY
    for name in POLICY_PRESETS.names():
        assert parser.parse_args([*command, "--policy", name]).policy == name
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--policy", "nope"])
    with pytest.raises(SystemExit):
        parser.parse_args([*command[:1], "--help"])
    out = capsys.readouterr().out
    assert "--policy" in out and "continuum-fixed" in out
