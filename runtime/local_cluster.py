"""Starting the embedded (single-machine) Ray cluster, bound to loopback by default.

Ray on Linux advertises and binds its services (GCS, raylet, workers, the
autoscaler's metrics) on the machine's network address, reachable from other
hosts. An embedded cluster needs none of that, so ``init_local_ray`` binds it to
127.0.0.1 unless asked otherwise:

    init_local_ray(num_cpus=4)                    # 127.0.0.1 only
    init_local_ray(host="0.0.0.0")                # Ray's default: the node's address, all interfaces
    TETHER_RAY_HOST=0.0.0.0 tether serve ...      # the same, from the environment

How: Ray turns ``_node_ip_address="127.0.0.1"`` into the node's network address
unless it runs in its single-machine (macOS/Windows) mode, whose switch is
``ray._private.ray_constants.ENABLE_RAY_CLUSTER``; with that off while the cluster
starts, every gRPC server of the cluster binds the loopback address. Joining an
existing cluster (``address=...``) is untouched. ``listening_addresses`` lists
what a started cluster's processes listen on (tests check it).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import ray

HOST_ENV = "TETHER_RAY_HOST"
DEFAULT_HOST = "127.0.0.1"
_ALL_INTERFACES = ("0.0.0.0", "::", "")


def ray_host(host: str | None = None) -> str:
    """The address the embedded cluster binds: ``host``, else ``$TETHER_RAY_HOST``, else 127.0.0.1."""
    if host is None:
        host = os.environ.get(HOST_ENV) or DEFAULT_HOST
    return host.strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def init_local_ray(num_cpus: int | None = None, host: str | None = None, **kwargs: Any) -> None:
    """``ray.init`` of a new embedded cluster bound to ``ray_host(host)``; ``kwargs`` go to ``ray.init``.

    Loopback (the default): every service listens on 127.0.0.1. ``0.0.0.0`` (or ``::``): Ray's own
    default, the node's network address on all interfaces. Another address: Ray advertises that one.
    The dashboard, when asked for with ``include_dashboard=True``, binds the same host.
    """
    host = ray_host(host)
    kwargs.setdefault("include_dashboard", False)
    if host in _ALL_INTERFACES:
        kwargs.setdefault("dashboard_host", "0.0.0.0")
        ray.init(num_cpus=num_cpus, **kwargs)
        return
    if not is_loopback(host):
        kwargs.setdefault("dashboard_host", host)
        ray.init(num_cpus=num_cpus, _node_ip_address=host, **kwargs)
        return
    kwargs.setdefault("dashboard_host", "127.0.0.1")
    from ray._private import ray_constants
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # so Ray keeps 127.0.0.1 as the node's address
    try:
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def cluster_pids() -> set[int]:
    """Process ids of the cluster this process started (GCS, raylet, workers, ...) and of this driver."""
    import psutil
    node = ray._private.worker._global_node
    pids = {os.getpid()}
    if node is None:
        return pids
    for infos in node.all_processes.values():
        for info in infos:
            try:
                p = psutil.Process(info.process.pid)
                pids.add(p.pid)
                pids.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                pass
    return pids


def listening_addresses(pids: set[int] | None = None) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket these processes listen on (default: ``cluster_pids()``)."""
    import psutil
    pids = cluster_pids() if pids is None else pids
    return sorted({(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.pid in pids})
