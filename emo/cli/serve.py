"""emo-serve: the renderer as an HTTP service on Ray Serve (a web page at /, the API under /v1, /metrics).

Each render replica loads the model once and renders one job at a time; Ray Serve queues and routes the jobs. On
one machine emo-serve starts Ray itself, listening on loopback only; on a cluster, `ray start` on every node and
`emo-serve --address auto`. A --host other than loopback needs --token (or an explicit --allow-unauthenticated).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from pathlib import Path

from ..errors import InputError
from .common import run_main
from .run import add_renderer_options, renderer_spec

PROG = "emo-serve"


def _parser() -> argparse.ArgumentParser:
    from ..serve.settings import Limits

    d = Limits()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_renderer_options(p, demo_help="the tiny random model (or, with --engine-dir, its export): a server that "
                                      "runs on a laptop CPU")
    p.add_argument("--replicas", type=int, default=1, help="render replicas, each with its own loaded model")
    p.add_argument("--gpus-per-replica", type=float,
                   help="GPUs for each replica (default: 1 when the Ray cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-replica", type=float,
                   help="CPUs (and torch threads) for each replica (default: 1 with GPUs, else this machine's "
                        "cores shared out)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 for all, "
                                                       "which needs --token)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback --host without a token (anyone who can reach it may render)")
    p.add_argument("--ray-dashboard", action="store_true",
                   help="also start Ray's dashboard (on loopback) when emo-serve starts Ray itself")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", help="an existing Ray cluster (`auto`: the one `ray start` made on this node)")
    p.add_argument("--max-queued", type=int, default=d.max_queued,
                   help="renders waiting for a replica before new ones get 429")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20)
    p.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds)
    p.add_argument("--max-size", type=int, default=d.max_size, help="largest output side a request may ask for")
    p.add_argument("--max-output-gigapixels", type=float, default=d.max_output_pixels / 1e9,
                   help="frames x width x height one render may make")
    p.add_argument("--max-frames-out-gb", type=float, default=d.max_frames_out_bytes / 2**30,
                   help="raw frames (GiB) one render may keep with frames_out")
    p.add_argument("--min-free-disk-mb", type=float, default=d.min_free_disk_bytes / 2**20,
                   help="free space (MiB) every accepted render leaves on the results and temp disks")
    p.add_argument("--upload-timeout", type=float, default=d.upload_timeout_s,
                   help="seconds a request body may take to arrive")
    p.add_argument("--upload-idle-timeout", type=float, default=d.upload_idle_timeout_s,
                   help="seconds a request body may stall before the request is answered 408")
    p.add_argument("--result-ttl", type=float, default=d.result_ttl_s, help="seconds finished results are kept")
    p.add_argument("--results-dir", metavar="DIR", help="where videos are kept (default: a private temp dir, "
                                                        "removed at shutdown)")
    p.add_argument("--temp-dir", metavar="DIR", help="where private upload dirs are made (default: the system's)")
    p.add_argument("--token", help="bearer token required on every route but /healthz and the page "
                                   "(default: $EMO_SERVE_TOKEN)")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _config(args: argparse.Namespace, cluster_gpus: float, cores: int):
    """Checked settings (cluster_gpus: the GPUs Ray sees, for --gpus-per-replica's default)."""
    from dataclasses import replace

    from ..serve.settings import Limits, ServeConfig

    if args.replicas < 1:
        raise InputError(f"--replicas must be >= 1 (got {args.replicas})")
    if args.max_queued < 0:
        raise InputError(f"--max-queued must be >= 0 (got {args.max_queued})")
    for option in ("max_upload_mb", "max_audio_seconds", "max_size", "max_output_gigapixels", "max_frames_out_gb",
                   "upload_timeout", "upload_idle_timeout", "result_ttl"):
        if not getattr(args, option) > 0:
            raise InputError(f"--{option.replace('_', '-')} must be > 0 (got {getattr(args, option)})")
    if not args.min_free_disk_mb >= 0:
        raise InputError(f"--min-free-disk-mb must be >= 0 (got {args.min_free_disk_mb})")
    token = args.token or os.environ.get("EMO_SERVE_TOKEN") or None
    _check_exposure(args.host, token, args.allow_unauthenticated)
    if not (args.models or args.demo or args.engine_dir):
        raise InputError("give --models DIR, --engine-dir DIR or --demo")
    for option, path in (("--models", args.models), ("--engine-dir", args.engine_dir)):
        if path and not args.address and not Path(path).is_dir():  # (on a cluster it must exist on the nodes)
            raise InputError(f"{option} directory not found: {path}")
    gpus = args.gpus_per_replica if args.gpus_per_replica is not None else (1.0 if cluster_gpus else 0.0)
    cpus = args.cpus_per_replica or (1.0 if gpus else float(max(1, cores // args.replicas)))
    limits = replace(Limits(), max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_audio_seconds=args.max_audio_seconds, max_size=args.max_size,
                     max_queued=args.max_queued, result_ttl_s=args.result_ttl,
                     max_output_pixels=int(args.max_output_gigapixels * 1e9),
                     max_frames_out_bytes=int(args.max_frames_out_gb * 2**30),
                     min_free_disk_bytes=int(args.min_free_disk_mb * 2**20),
                     upload_timeout_s=args.upload_timeout, upload_idle_timeout_s=args.upload_idle_timeout)
    spec = renderer_spec(args)
    return ServeConfig(renderer=spec, replicas=args.replicas, gpus_per_replica=gpus, cpus_per_replica=cpus,
                       limits=limits, results_dir=args.results_dir, temp_dir=args.temp_dir, token=token)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_exposure(host: str, token: str | None, allow_unauthenticated: bool) -> None:
    """A token that can travel in an HTTP header, and one at all when the server is reachable from elsewhere."""
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        raise InputError("--token (or $EMO_SERVE_TOKEN) must be printable ASCII without spaces: it is sent in an "
                         "HTTP header")
    if token is None and not _loopback(host) and not allow_unauthenticated:
        raise InputError(f"--host {host} is reachable from other machines: give --token (or $EMO_SERVE_TOKEN), "
                         "or --allow-unauthenticated to serve without one")


def _start_ray(args: argparse.Namespace):
    """Join the cluster --address names, or start Ray for this machine alone, on loopback -> the ray module."""
    if not args.address:
        from ..serve import local_ray

        return local_ray.start(dashboard=args.ray_dashboard)
    import ray

    ray.init(address=args.address, logging_level="WARNING")
    return ray


def _serve(args: argparse.Namespace) -> int:
    _config(args, 0, os.cpu_count() or 1)  # refuse bad options before Ray takes its time to start
    if not args.address:
        from ..serve.local_ray import prepare_environment

        prepare_environment()  # before Ray is imported
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise InputError('emo-serve needs Ray Serve: pip install -e ".[serve]"') from None
    from ..serve.app import APP_NAME, build_app

    ray = _start_ray(args)
    from ray import serve

    try:
        config = _config(args, ray.cluster_resources().get("GPU", 0), os.cpu_count() or 1)
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        print(f"{PROG}: serving on http://{args.host}:{args.port}/ ({config.replicas} replica(s); "
              f"API at /v1/renders, docs at /docs)", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        print(f"{PROG}: shutting down", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _serve, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
