"""Genuine `/identify` requests while slow clients trickle uploads (issue 39, finding 6).

    PYTHONPATH=. python bench/bench_slow_clients.py [--tricklers 64] [--rounds 3]
        [--requests 10] [--checkpoint CKPT] [--repo DIR] [--json out.json]

Starts `python -m service` (from `--repo`: this checkout by default, or an export of an older
commit, to measure the code before a change) with its default settings, files a few tracks,
then alternates, `--rounds` times: `--requests` genuine /identify requests one after the
other on an idle server ("unloaded"), then the same while `--tricklers` clients, each from
its own loopback address (127.0.0.2, 127.0.0.3, ...), send an upload's headers and a
multipart part header and then 1 byte every 2 s, reconnecting at once whenever the server
closes them ("loaded"; the genuine requests start 3 s after the tricklers). Alternating puts
a slow spell of a shared machine on both sides of the ratio.

Reported: the share of loaded genuine requests answered 200 (target >= 0.95), loaded p50
over unloaded p50 (target <= 3), the tricklers' answers by status and their connections.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workload import free_port, uploads

KEY = "bench-key"
HEAD = (
    b"POST /identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
    b"Content-Type: multipart/form-data; boundary=B\r\n\r\n"
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n"
)


async def trickler(port: int, address: str, stop: asyncio.Event, tally: Counter) -> None:
    """One slow client: headers, then a byte every 2 s; reconnect at once when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(address, 0)
            )
        except OSError:
            tally["connect_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        tally["connections"] += 1
        answer = b""
        try:
            writer.write(HEAD)
            while not stop.is_set():
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 2.0)
                except TimeoutError:
                    writer.write(b"x")
                    await writer.drain()
                    continue
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
        finally:
            writer.close()
        status = answer[9:12].decode(errors="replace") if answer else "closed"
        tally[f"answer_{status}"] += 1


async def genuine(url: str, data: bytes, n: int) -> list[tuple[int, float]]:
    """`n` /identify requests one after another: (status or 0 for a transport error, s)."""
    out = []
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(n):
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/identify", files={"file": ("q.flac", data)})
                status = r.status_code
            except httpx.TransportError:
                status = 0
            out.append((status, time.perf_counter() - start))
    return out


async def run_rounds(url: str, port: int, data: bytes, args) -> dict:
    unloaded, loaded, tally = [], [], Counter()
    for _ in range(args.rounds):
        unloaded += await genuine(url, data, args.requests)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(trickler(port, f"127.0.0.{2 + i}", stop, tally))
            for i in range(args.tricklers)
        ]
        await asyncio.sleep(3.0)  # every trickler holds a connection and has sent its headers
        loaded += await genuine(url, data, args.requests)
        stop.set()
        await asyncio.gather(*tasks)
    return {"unloaded": unloaded, "loaded": loaded, "tricklers": dict(tally)}


def summary(rows: list[tuple[int, float]]) -> dict:
    ok = [s for st, s in rows if st == 200]
    return {
        "n": len(rows),
        "ok_share": len(ok) / len(rows),
        "statuses": dict(Counter(st for st, _ in rows)),
        "p50_s": float(np.median(ok)) if ok else None,
        "p90_s": float(np.percentile(ok, 90)) if ok else None,
    }


def start_service(repo: Path, work: Path, checkpoint: Path | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "SINGER_INDEX_DIR": str(work / "index"),
        "SINGER_PORT": str(port),
        "SINGER_DEVICE": "cpu",
        "SINGER_API_KEY": KEY,
        "SINGER_LOG_LEVEL": "warning",
        **({"SINGER_CHECKPOINT": str(checkpoint)} if checkpoint else {}),
    }
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, cwd=repo, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(work / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready within 180 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tricklers", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=10, help="genuine requests per phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the genuine upload")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled one")
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose service runs")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    data, source = uploads(4, args.seconds)
    work = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    proc, url = start_service(args.repo.resolve(), work, args.checkpoint)
    try:
        with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": KEY}) as client:
            for i, track in enumerate(data[1:]):
                form = {"singer": f"singer-{i}", "domain": "mono"}
                r = client.post("/tracks", files={"file": (f"t{i}.flac", track)}, data=form)
                assert r.status_code in (200, 201), r.text
        port = int(url.rsplit(":", 1)[1])
        result = asyncio.run(run_rounds(url, port, data[0], args))
    finally:
        proc.kill()
        proc.wait(30)
    unloaded, loaded = summary(result["unloaded"]), summary(result["loaded"])
    ratio = loaded["p50_s"] / unloaded["p50_s"] if loaded["p50_s"] and unloaded["p50_s"] else None
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "repo": str(args.repo.resolve()),
        "upload": f"{args.seconds:g}-s FLAC, 44.1 kHz stereo: {source}",
        "tricklers": args.tricklers,
        "rounds": args.rounds,
        "unloaded": unloaded,
        "loaded": loaded,
        "p50_loaded_over_unloaded": ratio,
        "trickler_outcomes": result["tricklers"],
        "targets": {"ok_share": ">= 0.95", "p50_loaded_over_unloaded": "<= 3"},
        "meets_targets": bool(loaded["ok_share"] >= 0.95 and ratio is not None and ratio <= 3),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
