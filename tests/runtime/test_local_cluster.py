"""Which address the embedded Ray cluster binds (``init_local_ray``), without starting one.

tests/runtime/test_ray_runtime.py checks on a real cluster that the default binds loopback only.
"""

from __future__ import annotations

import pytest
import ray
from ray._private import ray_constants

from tether.runtime import local_cluster
from tether.runtime.local_cluster import HOST_ENV, init_local_ray, is_loopback, ray_host


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_init(**kwargs):
        seen.append({**kwargs, "single_machine_mode": not ray_constants.ENABLE_RAY_CLUSTER})
    monkeypatch.setattr(local_cluster.ray, "init", fake_init)
    monkeypatch.delenv(HOST_ENV, raising=False)
    return seen


def test_loopback_by_default(calls):
    before = ray_constants.ENABLE_RAY_CLUSTER
    init_local_ray(num_cpus=2, log_to_driver=False)
    (kw,) = calls
    assert kw["_node_ip_address"] == "127.0.0.1" and kw["single_machine_mode"]  # Ray keeps 127.0.0.1 then
    assert kw["dashboard_host"] == "127.0.0.1" and kw["include_dashboard"] is False and kw["num_cpus"] == 2
    assert ray_constants.ENABLE_RAY_CLUSTER == before  # restored for later ray.init calls


def test_all_interfaces_when_asked_by_argument_or_environment(calls, monkeypatch):
    init_local_ray(host="0.0.0.0")
    monkeypatch.setenv(HOST_ENV, "0.0.0.0")
    init_local_ray()
    for kw in calls:
        assert "_node_ip_address" not in kw and not kw["single_machine_mode"] and kw["dashboard_host"] == "0.0.0.0"


def test_a_given_address_is_advertised(calls):
    init_local_ray(host="10.1.2.3")
    assert calls[0]["_node_ip_address"] == "10.1.2.3" and not calls[0]["single_machine_mode"]


def test_host_resolution(monkeypatch):
    monkeypatch.delenv(HOST_ENV, raising=False)
    assert ray_host() == "127.0.0.1" and ray_host("0.0.0.0") == "0.0.0.0"
    monkeypatch.setenv(HOST_ENV, "::1")
    assert ray_host() == "::1" and ray_host("127.0.0.1") == "127.0.0.1"  # the argument wins
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")
    assert not ray.is_initialized()
