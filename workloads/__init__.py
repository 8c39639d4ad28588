"""tether.workloads: trace schema, loaders, synthesizer, replay harness, metrics and plots."""
