#!/usr/bin/env python3
"""walship's compression benchmark (scripts/bench part 7, or alone through
scripts/bench-compression): `compression = none` against `compression = zstd`.

On generated text-log lines (timestamps, levels, host and sensor names,
readings: what an edge node ships, not random bytes), `walship run --once`
uploads to an S3 endpoint through a local proxy that limits the upload
direction to LIMIT MiB/s with a token bucket (or, with --limit-by walship,
lets walship's own bandwidth_limit do it) and counts the bytes that cross it
both ways (the bytes on the wire). For each run: the bytes on the wire,
the end-to-end throughput (raw segment bytes per second of wall time), the
CPU time of walship per GiB of raw data, and its peak resident memory.
Then the same on incompressible bytes to a file target (no link), which
shows what compressing costs when it cannot help. Writes one JSON object
per run to OUT and prints a Markdown table.
"""

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time

MIB = 1024 * 1024


# ---------------------------------------------------------------- data

LEVELS = ["INFO"] * 6 + ["DEBUG"] * 3 + ["WARN", "ERROR"]
EVENTS = [
    "reading ok",
    "upload queued",
    "link quality changed",
    "threshold crossed",
    "retrying modbus poll",
    "calibration applied",
]


def log_lines(rng, size, start_seconds):
    """About `size` bytes of log lines, as one bytes object."""
    out, total, t, seq = [], 0, start_seconds, rng.randrange(1 << 20)
    while total < size:
        seq += 1
        t += rng.random() * 0.2
        line = "%s.%03dZ %-5s gw-%02d sensor=%s-%03d %s temp_c=%.2f rssi=-%d seq=%d\n" % (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)),
            int((t % 1) * 1000),
            rng.choice(LEVELS),
            rng.randrange(8),
            rng.choice(["temp", "hum", "press", "flow"]),
            rng.randrange(200),
            rng.choice(EVENTS),
            15 + rng.random() * 20,
            rng.randrange(40, 110),
            seq,
        )
        out.append(line.encode())
        total += len(line)
    return b"".join(out)[:size]


def generate(directory, count, size, kind):
    """`count` segments of `size` bytes of `kind` (text | random)."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(42)
    for i in range(1, count + 1):
        data = log_lines(rng, size, 1_790_000_000 + i * 600) if kind == "text" else os.urandom(size)
        with open(os.path.join(directory, "data-%d.log" % i), "wb") as f:
            f.write(data)


# ---------------------------------------------------------------- link


class TokenBucket:
    """`rate` bytes per second, bursts of at most `burst` bytes."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()
        self.lock = threading.Lock()

    def take(self, n):
        if self.rate is None:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0
        if wait > 0:
            time.sleep(wait)


class LimitedLink:
    """A TCP proxy to `upstream` (host, port): uploads limited by a token
    bucket, bytes counted both ways."""

    def __init__(self, upstream, rate):
        self.upstream = upstream
        self.bucket = TokenBucket(rate, 64 * 1024)
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, src, dst, upload):
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if upload:
                    self.bucket.take(len(chunk))
                with self.lock:
                    if upload:
                        self.up += len(chunk)
                    else:
                        self.down += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def counts(self):
        with self.lock:
            return self.up, self.down


# ---------------------------------------------------------------- runs


def config(path, state, target_lines, name, directory, compression):
    with open(path, "w") as f:
        f.write("[global]\nstate_dir = %s\n%s\nlog_level = warn\n\n" % (state, target_lines))
        f.write("[stream %s]\ndir = %s\npattern = data-{seq}.log\nseal = spool\nbatch_size = 4\n" % (name, directory))
        f.write("compression = %s\n" % compression)


def memory_kib(pid):
    """(peak RSS, current anonymous RSS) of `pid` in KiB, from its status;
    None once it has exited."""
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]), int(fields["RssAnon"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def run_once(walship, conf):
    """Wall seconds, CPU seconds (user + system), peak RSS and peak
    anonymous memory (KiB, sampled every 10 ms) of `walship run --once -c
    conf`. (The rusage's ru_maxrss would count this Python process's own
    memory, inherited through fork.)"""
    started = time.monotonic()
    proc = subprocess.Popen([walship, "run", "--once", "-c", conf], stdout=subprocess.DEVNULL)
    peak_rss = peak_anon = 0
    while proc.poll() is None:
        sample = memory_kib(proc.pid)
        if sample:
            peak_rss, peak_anon = max(peak_rss, sample[0]), max(peak_anon, sample[1])
        time.sleep(0.01)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("walship run --once -c %s failed" % conf)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - run_once.cpu_so_far
    run_once.cpu_so_far += cpu
    return wall, cpu, peak_rss, peak_anon


run_once.cpu_so_far = 0.0


def stored_bytes(directory):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--walship", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--endpoint", required=True, help="http://HOST:PORT of the S3 server")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--mib", type=int, default=64, help="MiB of text logs (4 MiB segments)")
    parser.add_argument("--limit-mib", type=float, default=10)
    parser.add_argument("--limit-by", choices=["proxy", "walship"], default="proxy",
                        help="who limits the link: the proxy's token bucket, or walship's own "
                        "bandwidth_limit (the proxy then only counts)")
    args = parser.parse_args()

    host, port = args.endpoint.split("//", 1)[1].rsplit(":", 1)
    by_proxy = args.limit_by == "proxy"
    link = LimitedLink((host, int(port)), args.limit_mib * MIB if by_proxy else None)
    count = max(1, args.mib // 4)
    text, noise = os.path.join(args.work, "text"), os.path.join(args.work, "random")
    generate(text, count, 4 * MIB, "text")
    generate(noise, count, 4 * MIB, "random")
    raw = count * 4 * MIB
    rows = []

    stamp = int(time.time())
    for compression in ("none", "zstd"):
        name = "logs"
        prefix = "bench-zstd-%d-%s" % (stamp, compression)
        target = "target = s3://%s/%s\nendpoint = http://127.0.0.1:%d\nregion = %s\npart_size = 8MiB\nparallel_uploads = 2" % (
            args.bucket, prefix, link.port, args.region)
        if not by_proxy:
            target += "\nbandwidth_limit = %gMiB/s" % args.limit_mib
        conf = os.path.join(args.work, "s3-%s.conf" % compression)
        config(conf, os.path.join(args.work, "state-s3-" + compression), target, name, text, compression)
        before = link.counts()
        wall, cpu, rss, anon = run_once(args.walship, conf)
        after = link.counts()
        rows.append({
            "section": "compression", "data": "text logs",
            "link": "%g MiB/s (%s)" % (args.limit_mib, "proxy" if by_proxy else "bandwidth_limit"),
            "compression": compression, "raw_bytes": raw, "wire_up_bytes": after[0] - before[0],
            "wire_down_bytes": after[1] - before[1], "seconds": wall, "cpu_seconds": cpu, "max_rss_kib": rss, "max_anon_kib": anon,
        })

    for compression in ("none", "zstd"):
        archive = os.path.join(args.work, "archive-" + compression)
        os.makedirs(archive, exist_ok=True)
        conf = os.path.join(args.work, "file-%s.conf" % compression)
        config(conf, os.path.join(args.work, "state-file-" + compression), "target = file://" + archive,
               "noise", noise, compression)
        wall, cpu, rss, anon = run_once(args.walship, conf)
        rows.append({
            "section": "compression", "data": "random bytes", "link": "file target",
            "compression": compression, "raw_bytes": raw, "wire_up_bytes": stored_bytes(archive),
            "wire_down_bytes": 0, "seconds": wall, "cpu_seconds": cpu, "max_rss_kib": rss, "max_anon_kib": anon,
        })

    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    report(rows)


def report(rows):
    print("| data | link | compression | MiB raw | MiB on the wire (stored) | ratio | throughput MiB/s "
          "| CPU s per GiB | peak RSS MiB | peak anon MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gib = r["raw_bytes"] / (1024 * MIB)
        print("| %s | %s | %s | %.0f | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f |" % (
            r["data"], r["link"], r["compression"], r["raw_bytes"] / MIB, r["wire_up_bytes"] / MIB,
            r["raw_bytes"] / max(1, r["wire_up_bytes"]), r["raw_bytes"] / MIB / r["seconds"],
            r["cpu_seconds"] / gib, r["max_rss_kib"] / 1024, r["max_anon_kib"] / 1024))
    text = {r["compression"]: r for r in rows if r["data"] == "text logs"}
    if len(text) == 2:
        fewer = text["none"]["wire_up_bytes"] / max(1, text["zstd"]["wire_up_bytes"])
        faster = text["none"]["seconds"] / text["zstd"]["seconds"]
        print()
        print("budget: >= 4x fewer bytes on the wire: %.1fx %s" % (fewer, "PASS" if fewer >= 4 else "MISS"))
        print("budget: throughput no lower than uncompressed: %.2fx %s" % (faster, "PASS" if faster >= 1 else "MISS"))


if __name__ == "__main__":
    main()
