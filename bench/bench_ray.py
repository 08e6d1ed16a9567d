"""Ray executor benchmark: `nnsight-lab serve --executor ray` against the default one, tiny GPT-2.

    start_s       seconds from `nnsight-lab serve` to "serving on" (Ray's start, actors, loads).
    added_ms      what the Ray executor adds to one remote trace over the default (process)
                  executor: median over rounds of (ray - local), the two servers round-robin.
    rps_8         requests per second with 8 concurrent clients (threads, one request at a
                  time each), `--replicas 1` beside `--replicas 2`: a light trace (one saved
                  row) and a busy one (the body counts to 200k first, ~0.1-0.2 s of CPU).
    result_100mb  (not with --quick) a trace saving a 100 MB tensor, on the 2-replica Ray
                  server and on the default one: its seconds, and the server process's peak
                  memory growth while serving it, as a multiple of the result's size.

This machine has two cores shared by the server, Ray, the replicas and the clients, so the
2-replica figure shows how much parallelism is left, not a cluster's speed-up.

    python bench/bench_ray.py [--rounds N] [--requests N] [--quick]
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_remote import BIG_CLIENT, PROMPT, requests_per_second, save_tiny_gpt2

SPINS = 200_000


class Server:
    """One `nnsight-lab serve` on an ephemeral port, with the bench's key."""

    def __init__(self, folder: Path, model: Path, key: str, *options: str) -> None:
        command = [sys.executable, "-m", "nnsight_lab.remote.cli", "serve", "--model"]
        command += [f"tiny={model}", "--host", "127.0.0.1", "--port", "0"]
        command += ["--api-keys", str(folder.parent / "keys.txt"), "--max-queued-per-key", "64"]
        folder.mkdir()
        out = folder / "stdout.txt"
        start = time.perf_counter()
        with open(out, "wb") as stdout:
            self.process = subprocess.Popen(
                [*command, *options], stdout=stdout, stderr=subprocess.DEVNULL
            )
        self.url = _wait_for_url(self.process, out)
        self.start_s = time.perf_counter() - start

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def _wait_for_url(process: subprocess.Popen, out: Path) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+)", out.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError("the server exited before serving")
        time.sleep(0.1)
    process.kill()
    raise TimeoutError("the server did not start")


def trace(model, url: str, spins: int = 0) -> None:
    with model.trace(PROMPT, remote=url):
        n = 0
        while n < spins:
            n += 1
        model.lm_head.output[:, -1].save()


def added_ms(model, local: str, ray: str, rounds: int) -> tuple[float, float, float]:
    """(default ms, ray ms, median of ray - default) over round-robin rounds."""
    here, there, added = [], [], []
    for index in range(rounds):
        times = {}
        for url in [local, ray] if index % 2 else [ray, local]:
            start = time.perf_counter()
            trace(model, url)
            times[url] = (time.perf_counter() - start) * 1e3
        here.append(times[local])
        there.append(times[ray])
        added.append(times[ray] - times[local])
    return statistics.median(here), statistics.median(there), statistics.median(added)


def rps(model, url: str, total: int, spins: int) -> float:
    """Requests per second with 8 clients against `url` (light or busy bodies)."""
    import nnsight_lab as nnsight

    before = nnsight.CONFIG.API.HOST
    nnsight.CONFIG.API.HOST = url
    try:
        if spins == 0:
            return requests_per_second(model, 8, total)
        return _busy_rps(model, url, total, spins)
    finally:
        nnsight.CONFIG.API.HOST = before


def _busy_rps(model, url: str, total: int, spins: int) -> float:
    counts = [total // 8 + (i < total % 8) for i in range(8)]

    def client(count: int) -> None:
        for _ in range(count):
            trace(model, url, spins)

    threads = [threading.Thread(target=client, args=(c,)) for c in counts]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total / (time.perf_counter() - start)


def big_result(server: Server, key: str) -> str:
    """The 100 MB result's seconds, and the server's peak memory growth while it served it.

    Sampled every 5 ms from /proc: private memory (`RssAnon`), and the shared pages of
    Ray's object store that the server mapped while reading the chunks (`RssShmem`).
    """
    status = Path(f"/proc/{server.process.pid}/status")
    before = {field: _kb(status, field) for field in ("RssAnon", "RssShmem")}
    peak = dict(before)
    done_event = threading.Event()

    def sample() -> None:
        while not done_event.wait(0.005):
            for field in peak:
                peak[field] = max(peak[field], _kb(status, field))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = subprocess.run(
            [sys.executable, "-c", BIG_CLIENT, server.url, key],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        done_event.set()
        sampler.join()
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    seconds, size, _ = done.stdout.split()
    private, shared = ((peak[f] - before[f]) * 1024 / int(size) for f in ("RssAnon", "RssShmem"))
    return (
        f"{float(seconds):.2f} s, server peak growth {private:.2f}x private + {shared:.2f}x shared"
    )


def _kb(status: Path, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", status.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a few rounds: check it runs")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 4, 8
    import torch

    import nnsight_lab as nnsight

    torch.set_num_threads(1)
    nnsight.CONFIG.APP.REMOTE_LOGGING = False
    with tempfile.TemporaryDirectory() as name:
        folder, key = Path(name), secrets.token_hex(16)
        (folder / "keys.txt").write_text(f"bench:{key}\n")
        model_path = save_tiny_gpt2(folder / "tiny")
        local = Server(folder / "local", model_path, key)
        servers = [local]
        try:
            nnsight.CONFIG.API.HOST, nnsight.CONFIG.API.KEY = local.url, key
            model = nnsight.LanguageModel("tiny")
            figures = {}
            for replicas in (1, 2):
                ray = Server(
                    folder / f"ray{replicas}",
                    model_path,
                    key,
                    "--executor",
                    "ray",
                    "--replicas",
                    str(replicas),
                )
                servers.append(ray)
                figures[f"start_s_{replicas}"] = ray.start_s
                trace(model, local.url)
                rps(model, ray.url, 8, 0)  # warm every replica
                if replicas == 1:
                    figures["added"] = added_ms(model, local.url, ray.url, args.rounds)
                figures[f"light_{replicas}"] = rps(model, ray.url, args.requests, 0)
                busy = args.requests // 4 or 2
                figures[f"busy_{replicas}"] = rps(model, ray.url, busy, SPINS)
                if replicas == 2 and not args.quick:
                    figures["big"] = big_result(ray, key)
                    figures["big_local"] = big_result(local, key)
                ray.stop()
                servers.remove(ray)
            _report(figures, local.start_s)
        finally:
            for server in servers:
                server.stop()


def _report(figures: dict, local_start: float) -> None:
    here, there, added = figures["added"]
    rows = {
        "start_s": f"local {local_start:.1f} s, ray 1 replica {figures['start_s_1']:.1f} s,"
        f" 2 replicas {figures['start_s_2']:.1f} s",
        "added_ms": f"local {here:.1f} ms, ray {there:.1f} ms, added {added:.1f} ms",
        "rps_8": f"light: 1 replica {figures['light_1']:.1f}/s, 2 replicas {figures['light_2']:.1f}/s;"
        f" busy: 1 replica {figures['busy_1']:.1f}/s, 2 replicas {figures['busy_2']:.1f}/s",
    }
    if "big" in figures:
        rows["result_100mb"] = f"ray: {figures['big']}; local: {figures['big_local']}"
    print(f"{'case':<14}figure")
    for case, figure in rows.items():
        print(f"{case:<14}{figure}")


if __name__ == "__main__":
    main()
