"""Remote execution benchmark: a real `nnsight-lab serve` on loopback, a tiny GPT-2.

    added_ms      what a remote trace adds over the same trace run here (one saved block
                  output): median over rounds of (remote - local), local and remote
                  round-robin in one process. Target: under 30 ms.
    rps_8         requests per second with 8 concurrent clients (threads, one request at
                  a time each), and the same for 1 client beside it.
    result_100mb  a trace that saves a 100 MB tensor, run in a fresh client process:
                  the seconds it takes and the client's peak memory growth over the
                  result's size (`ru_maxrss`). Target: under 1.5x.

The server runs one worker (one replica) on this machine's two cores, so rps_8 shows
the queue serving one request at a time, not parallel speed-up.

    python bench/bench_remote.py [--rounds N] [--requests N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import save_tiny_gpt2  # noqa: E402

PROMPT = "The Eiffel Tower is in the city of"
BIG_CLIENT = """
import resource, sys, time, torch
import nnsight_lab as nnsight
nnsight.CONFIG.API.HOST, nnsight.CONFIG.API.KEY = sys.argv[1], sys.argv[2]
nnsight.CONFIG.APP.REMOTE_LOGGING = False
llm = nnsight.LanguageModel("tiny")
with llm.trace("Hello", remote=True):
    warm = llm.lm_head.output[:, -1].save()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
with llm.trace("Hello", remote=True):
    big = torch.ones(25_000_000).save()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = big.numel() * big.element_size()
print(f"{seconds:.2f} {size} {max(peak - before, 0)}")
"""


def start_server(folder: Path) -> tuple[subprocess.Popen, str, str]:
    """`nnsight-lab serve` on an ephemeral port; returns the process, its URL and a key."""
    key = secrets.token_hex(16)
    (folder / "keys.txt").write_text(f"bench:{key}\n")
    model = save_tiny_gpt2(folder / "tiny")
    command = [sys.executable, "-m", "nnsight_lab.remote.cli", "serve", "--model"]
    command += [f"tiny={model}", "--host", "127.0.0.1", "--port", "0"]
    command += ["--api-keys", str(folder / "keys.txt"), "--max-queued-per-key", "64"]
    out = folder / "stdout.txt"
    with open(out, "wb") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+)", out.read_text())
        if found:
            return process, found.group(1), key
        if process.poll() is not None:
            raise RuntimeError("the server exited before serving")
        time.sleep(0.1)
    process.kill()
    raise TimeoutError("the server did not start")


def added_ms(local, remote, rounds: int) -> tuple[float, float, float]:
    """(local ms, remote ms, median of remote - local) over round-robin rounds."""

    def trace_local() -> None:
        with local.trace(PROMPT):
            local.transformer.h[-1].output.save()

    def trace_remote() -> None:
        with remote.trace(PROMPT, remote=True):
            remote.transformer.h[-1].output.save()

    here, there, added = [], [], []
    for index in range(rounds):
        order = [trace_local, trace_remote] if index % 2 else [trace_remote, trace_local]
        times = {}
        for fn in order:
            start = time.perf_counter()
            fn()
            times[fn] = (time.perf_counter() - start) * 1e3
        here.append(times[trace_local])
        there.append(times[trace_remote])
        added.append(times[trace_remote] - times[trace_local])
    return statistics.median(here), statistics.median(there), statistics.median(added)


def requests_per_second(remote, clients: int, total: int) -> float:
    """Requests served per second with `clients` threads sending `total` traces in all."""
    counts = [total // clients + (i < total % clients) for i in range(clients)]

    def client(count: int) -> None:
        for _ in range(count):
            with remote.trace(PROMPT, remote=True):
                remote.lm_head.output[:, -1].save()

    threads = [threading.Thread(target=client, args=(c,)) for c in counts]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total / (time.perf_counter() - start)


def big_result(url: str, key: str) -> str:
    """The 100 MB result's line: seconds, and peak memory growth over its size."""
    done = subprocess.run(
        [sys.executable, "-c", BIG_CLIENT, url, key], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    seconds, size, growth = done.stdout.split()
    return f"{float(seconds):.2f} s, peak growth {int(growth) / int(size):.2f}x of {int(size) / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--quick", action="store_true", help="a few rounds: check it runs")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 4, 8
    import torch

    import nnsight_lab as nnsight

    torch.set_num_threads(1)
    nnsight.CONFIG.APP.REMOTE_LOGGING = False
    with tempfile.TemporaryDirectory() as name:
        process, url, key = start_server(Path(name))
        try:
            nnsight.CONFIG.API.HOST, nnsight.CONFIG.API.KEY = url, key
            local = nnsight.LanguageModel(str(Path(name) / "tiny"), dispatch=True)
            remote = nnsight.LanguageModel("tiny")
            added_ms(local, remote, 2)  # warm both paths
            here, there, added = added_ms(local, remote, args.rounds)
            print(f"{'case':<14}{'figure':>60}")
            print(
                f"{'added_ms':<14}{f'local {here:.1f} ms, remote {there:.1f} ms, added {added:.1f} ms':>60}"
            )
            one = requests_per_second(remote, 1, args.requests // 4 or 1)
            eight = requests_per_second(remote, 8, args.requests)
            print(f"{'rps_8':<14}{f'1 client {one:.1f}/s, 8 clients {eight:.1f}/s':>60}")
            if not args.quick:
                print(f"{'result_100mb':<14}{big_result(url, key):>60}")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
