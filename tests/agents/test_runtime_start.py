"""``Runtime.start`` on a real local Ray cluster: a start that fails leaves nothing running."""

from __future__ import annotations

import pytest
import ray

from tether.agents import Runtime


@pytest.mark.timeout(120)
def test_a_failed_start_shuts_down_the_cluster_it_started(tmp_path):
    if ray.is_initialized():
        pytest.skip("needs to start its own Ray cluster")
    rt = Runtime(model=str(tmp_path), replicas=1, num_cpus=1, tool_actors=1)  # no checkpoint there
    try:
        with pytest.raises(ray.exceptions.RayActorError, match="config.json"):
            rt.start()
        assert not ray.is_initialized() and rt.replicas == [] and rt.programs == []
    finally:
        ray.shutdown()
