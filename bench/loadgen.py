"""A bounded load test of a running emo-serve: N requests from C concurrent clients, latency and throughput.

Each client submits its share of the requests one after another; a 429 is retried after its Retry-After (capped),
at most `attempts` times, so every request ends done, failed or rejected. Every request is counted exactly once.

    python bench/loadgen.py --url http://127.0.0.1:8000 --requests 24 --clients 8 IMAGE AUDIO
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    request: int
    state: str  # done, failed, cancelled, rejected (gave up after repeated 429s), lost (no answer in time)
    job: str | None
    latency_s: float  # first submit to the end of the job
    rejections: int  # 429s answered to this request


@dataclass
class LoadReport:
    requests: int
    clients: int
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    def summary(self) -> dict:
        done = sorted(o.latency_s for o in self.outcomes if o.state == "done")
        q = statistics.quantiles(done, n=20, method="inclusive") if len(done) >= 2 else done * 19
        return {"requests": self.requests, "clients": self.clients, "done": len(done),
                "failed": self.count("failed"), "rejected": self.count("rejected"), "lost": self.count("lost"),
                "responses_429": sum(o.rejections for o in self.outcomes),
                "p50_s": round(statistics.median(done), 3) if done else None,
                "p95_s": round(q[18], 3) if done else None,
                "throughput_per_s": round(len(done) / self.wall_s, 3), "wall_s": round(self.wall_s, 2)}


def run_load(url: str, image: Path, audio: Path, form: dict, requests: int = 24, clients: int = 8,
             token: str | None = None, attempts: int = 30, max_wait_s: float = 2.0, timeout_s: float = 600.0
             ) -> LoadReport:
    import requests as http

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    image_bytes, audio_bytes = Path(image).read_bytes(), Path(audio).read_bytes()
    deadline = time.monotonic() + timeout_s
    lock = threading.Lock()
    report = LoadReport(requests, clients, 0.0)

    def one(i: int) -> Outcome:
        start, rejections = time.monotonic(), 0
        with http.Session() as s:
            for _ in range(attempts):
                r = s.post(f"{url}/v1/renders", headers=headers, data=form, timeout=60,
                           files={"image": ("image", image_bytes), "audio": ("audio", audio_bytes)})
                if r.status_code != 429:
                    break
                rejections += 1
                time.sleep(min(max_wait_s, float(r.headers.get("Retry-After", 1))))
            else:
                return Outcome(i, "rejected", None, time.monotonic() - start, rejections)
            r.raise_for_status()
            job = r.json()["id"]
            while time.monotonic() < deadline:
                state = s.get(f"{url}/v1/renders/{job}", headers=headers, timeout=60).json()["state"]
                if state in ("done", "failed", "cancelled"):
                    return Outcome(i, state, job, time.monotonic() - start, rejections)
                time.sleep(0.1)
            return Outcome(i, "lost", job, time.monotonic() - start, rejections)

    def client(indices: list[int]) -> None:
        for i in indices:
            outcome = one(i)
            with lock:
                report.outcomes.append(outcome)

    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [list(range(c, requests, clients)) for c in range(clients)]))
    report.wall_s = time.monotonic() - t0
    report.outcomes.sort(key=lambda o: o.request)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/loadgen.py", description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("audio")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--token")
    p.add_argument("--attempts", type=int, default=30, help="429s a request takes before its client gives up")
    p.add_argument("--max-wait", type=float, default=2.0, help="longest sleep after a 429 (else its Retry-After)")
    p.add_argument("--form", default="{}", help='render settings as JSON, e.g. \'{"size": 64, "steps": 1}\'')
    p.add_argument("--out", help="also write the summary and every outcome as JSON here")
    args = p.parse_args(argv)
    report = run_load(args.url, Path(args.image), Path(args.audio), json.loads(args.form), args.requests,
                      args.clients, args.token, args.attempts, args.max_wait)
    print(json.dumps(report.summary()))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": report.summary(),
                                              "outcomes": [asdict(o) for o in report.outcomes]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
