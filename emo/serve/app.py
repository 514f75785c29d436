"""The Ray Serve application: a pool of render replicas behind one FastAPI ingress."""
from __future__ import annotations

from .settings import ServeConfig

APP_NAME = "emo"


def build_app(config: ServeConfig):
    """-> a bound Serve application (serve.run it). Render replicas: one Renderer each, one render at a time, one
    GPU each when gpus_per_replica is 1; Serve queues up to limits.max_queued renders at the ingress's handle."""
    from ray import serve

    from .ingress import Ingress
    from .worker import RenderWorker

    worker = serve.deployment(
        RenderWorker, name="RenderWorker", num_replicas=config.replicas, max_ongoing_requests=1,
        max_queued_requests=config.limits.max_queued, graceful_shutdown_timeout_s=5,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
    ).bind(config.renderer, config.temp_dir, max(1, int(config.cpus_per_replica)))
    ingress = serve.deployment(
        serve.ingress()(Ingress), name="Ingress", num_replicas=1, max_ongoing_requests=1000,
        graceful_shutdown_timeout_s=5, ray_actor_options={"num_cpus": 0},
    ).bind(worker, config)
    return ingress
