"""Diagnostic: the sim replay's loop with the REAL runner, the virtual clock advanced by each step's
measured time; records (shape, measured) per step to compare with a profile's prediction."""
import json, sys, time, torch
torch.set_num_threads(1)
import tether.workloads.replay_sim as rs
from tether.engine.engine import build_core
from tether.engine.model_loader import load_model
from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import POLICY_PRESETS
from tether.workloads.trace import Trace
from tether.workloads.scaling import scale_trace
from tether.workloads.replay_common import ReplaySettings, TurnFeeder

policy = sys.argv[1]
loaded = load_model("default")
steps = []

class Timed:
    def __init__(self, inner, clock): self.inner, self.clock = inner, clock
    def __getattr__(self, k): return getattr(self.inner, k)
    def execute(self, batch):
        ctx = [s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens)]
        t0 = time.perf_counter(); out = self.inner.execute(batch); dt = time.perf_counter() - t0
        steps.append({"new_tokens": list(batch.num_new_tokens), "context": ctx, "t": dt, "kind": "exec"})
        self.clock.advance(dt); return out
    def swap(self, so, si):
        t0 = time.perf_counter(); self.inner.swap(so, si); dt = time.perf_counter() - t0
        steps.append({"swap": len(so) + len(si), "t": dt, "kind": "swap"}); self.clock.advance(dt)

def build(cfg, profile, clock, **kw):
    core = build_core(cfg, loaded.hf_model, None, clock=clock)
    core.runner = Timed(core.runner, clock)
    return core

rs.build_simulated_core = build
trace = scale_trace(Trace.load("synth8-seed7.jsonl"), token_scale=0.1)
settings = ReplaySettings(kv_blocks=int(sys.argv[2]), host_kv_blocks=int(sys.argv[3]), max_num_batched_tokens=512,
                          concurrency=4, time_scale=0.5)
feeder = TurnFeeder(TurnFeeder(trace, seed=0).trace)
prof = LatencyProfile.load("cpu-profile-1-thread.json")
t0 = time.perf_counter()
run = rs.replay_sim(feeder, POLICY_PRESETS.get(policy), prof, settings)
print("wall", time.perf_counter() - t0, "busy", run.engine_stats["step_busy_s"], "steps", run.engine_stats["steps"])
json.dump(steps, open(f"measured-steps-{policy}-{sys.argv[2]}.json", "w"))
