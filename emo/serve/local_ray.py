"""The Ray that emo-serve starts for itself (no --address): one machine, every port of it on loopback.

Ray replaces a loopback node address by the machine's network address, and listens there, unless it is told that
it runs no multi-node cluster (LOCAL_RAY_ENV, read when Ray is imported and by every process Ray starts). Ray Serve
then still binds each replica's inter-deployment gRPC server to every address ("[::]"); a setup hook run in each of
Ray's worker processes binds it to loopback instead. A cluster that `ray start` made (--address) is left as it is.
"""
from __future__ import annotations

import os

LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SETUP_HOOK = "emo.serve.local_ray.replicas_on_loopback"


def prepare_environment() -> None:
    """Before Ray is imported in this process: what every process of a local Ray reads."""
    os.environ.update(LOCAL_RAY_ENV)


def start(dashboard: bool = False):
    """ray.init for this machine alone, on loopback (the dashboard, when asked for, too) -> the ray module."""
    prepare_environment()
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # what LOCAL_RAY_ENV says, should Ray have been imported before
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=dashboard, dashboard_host="127.0.0.1",
             runtime_env={"worker_process_setup_hook": SETUP_HOOK}, logging_level="WARNING")
    return ray


def replicas_on_loopback() -> None:
    """In each Ray worker process: Serve replicas' inter-deployment gRPC servers listen on loopback only."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    bind = replica.add_port_to_grpc_server
    if getattr(bind, "on_loopback", False):
        return

    def on_loopback(server, address: str):
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:"):]
        return bind(server, address)

    on_loopback.on_loopback = True
    replica.add_port_to_grpc_server = on_loopback
