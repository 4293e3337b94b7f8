#!/usr/bin/env python3
"""Helpers for scripts/bench: data generation, measuring one command, the
idle-CPU probe, a 1,000,000-record manifest, and the results report.

Subcommands (each prints or appends JSON; scripts/bench drives them):

  gen DIR COUNT SIZE [--start N]       COUNT random files data-N.log of SIZE bytes
  measure --out FILE --label L [--set K=V]... [--garage-log LOG] [--bytes N] -- CMD...
                                       run CMD, sample its process tree, append
                                       one JSON line of results to FILE
  idle --pid PID --seconds S [--settle S]
                                       CPU used by a running process over S seconds
  journal PATH STREAM COUNT [--snapshot-every K]
                                       a valid manifest journal of COUNT records
                                       (and a snapshot every K positions of its
                                       second half)
  archive ROOT STREAM COUNT --tail N [--snapshot-every K] [--state DIR]
                                       that journal's archive on a file target:
                                       batch and snapshot objects, level-0 record
                                       objects of the last N records and of the
                                       snapshots, DIR's binding to it
  target-requests LOG                  requests a file target logged at debug
                                       level, counted as S3 would take them
  wire --out FILE --label L --listen PORT --upstream HOST:PORT --limit B [--set K=V]... -- CMD...
                                       run CMD while a TCP proxy on PORT counts the
                                       bytes it forwards upstream, per second: the
                                       rate on the wire against a limit of B bytes/s
  report FILE [--markdown OUT]         medians, ratios and budgets as tables

Measuring: wall time from spawn to exit; CPU (user + system) from wait4()'s
rusage, which includes every descendant the command waited for (so a shell
loop of curls counts every curl). Every 50 ms the whole process tree's
VmRSS, RssAnon and RssFile from /proc/PID/status are summed and their peaks
kept, and the largest VmHWM of any one process is the "peak RSS" (rusage's
ru_maxrss is not used: it counts the forked Python before exec).
Requests are counted from Garage's own log, which has one INFO line per S3
request: lines appended while the command ran. Garage's own ERROR lines in
that span are counted too (server-side trouble, e.g. "database is locked").

Only the standard library is used; nothing here talks to the network.
"""

import argparse
import json
import os
import re
import socket
import threading
import statistics
import subprocess
import sys
import time
import zlib

SAMPLE_INTERVAL = 0.05
MIB = 1024 * 1024
GIB = 1024 * MIB

# A request line in Garage's log: "generic_server: ADDR (key GK..) METHOD /path".
REQUEST_LINE = re.compile(r"generic_server: \S+ (?:\(key \S+\) )?(GET|PUT|POST|HEAD|DELETE) ")
# An error answer: "generic_server: error 404 Not Found, ... in response to ...".
ERROR_LINE = re.compile(r"generic_server: error (\d{3})")
# Garage reporting trouble of its own.
SERVER_ERROR_LINE = re.compile(r"^\S+\s+ERROR ")


# ---------------------------------------------------------------- gen


def cmd_gen(args):
    """Write COUNT files of SIZE random bytes (incompressible, like WAL)."""
    os.makedirs(args.dir, exist_ok=True)
    chunk = min(args.size, 4 * MIB)
    for position in range(args.start, args.start + args.count):
        path = os.path.join(args.dir, f"data-{position}.log")
        with open(path, "wb") as out:
            left = args.size
            while left > 0:
                n = min(chunk, left)
                out.write(os.urandom(n))
                left -= n


# ---------------------------------------------------------------- measure


def read_status(pid):
    """VmRSS, RssAnon, RssFile, VmHWM (KiB) of one process, or None."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    fields[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return fields if "VmRSS" in fields else None


def process_tree(pid):
    """pid and all its descendants (through /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            pass
    return out


def garage_log_size(path):
    try:
        return os.path.getsize(path) if path else 0
    except FileNotFoundError:
        return 0


def count_requests(path, since):
    """Requests by method, error answers by status and server ERROR lines in
    `path` after byte `since`."""
    methods, errors = {}, {}
    if not path:
        return None, None
    with open(path, "rb") as f:
        f.seek(since)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            m = REQUEST_LINE.search(line)
            if m:
                methods[m.group(1)] = methods.get(m.group(1), 0) + 1
                continue
            m = ERROR_LINE.search(line)
            if m:
                errors[m.group(1)] = errors.get(m.group(1), 0) + 1
            elif SERVER_ERROR_LINE.search(line):
                errors["server"] = errors.get("server", 0) + 1
    return methods, errors


def downsample(values, points=24):
    if len(values) <= points:
        return values
    step = len(values) / points
    return [values[int(i * step)] for i in range(points)] + [values[-1]]


def run_measured(cmd, stdout_path=None):
    """Run cmd; return (exit status, wall s, rusage, sampled peaks, anon series)."""
    stdout = open(stdout_path, "wb") if stdout_path else None
    start = time.monotonic()
    # Popen returns once the child has exec'd (it waits on a close-on-exec
    # pipe), so no sample ever sees the forked copy of this Python process.
    # The child is then reaped here with wait4, for its rusage.
    child = subprocess.Popen(cmd, stdout=stdout)
    pid = child.pid
    if stdout:
        stdout.close()
    peaks = {"tree_rss_kb": 0, "tree_anon_kb": 0, "tree_file_kb": 0, "proc_hwm_kb": 0}
    anon_series = []
    while True:
        waited, status, rusage = os.wait4(pid, os.WNOHANG)
        if waited == pid:
            break
        rss = anon = filed = 0
        for p in process_tree(pid):
            s = read_status(p)
            if s is None:
                continue
            rss += s.get("VmRSS", 0)
            anon += s.get("RssAnon", 0)
            filed += s.get("RssFile", 0)
            peaks["proc_hwm_kb"] = max(peaks["proc_hwm_kb"], s.get("VmHWM", 0))
        peaks["tree_rss_kb"] = max(peaks["tree_rss_kb"], rss)
        peaks["tree_anon_kb"] = max(peaks["tree_anon_kb"], anon)
        peaks["tree_file_kb"] = max(peaks["tree_file_kb"], filed)
        if anon:
            anon_series.append(anon)
        time.sleep(SAMPLE_INTERVAL)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code  # reaped above; Popen must not wait for it again
    return code, wall, rusage, peaks, anon_series


def cmd_measure(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        sys.exit("measure: no command given")
    log_start = garage_log_size(args.garage_log)
    code, wall, rusage, peaks, anon_series = run_measured(cmd, args.stdout)
    if args.garage_log:
        time.sleep(0.3)  # let Garage finish writing the last lines
    methods, errors = count_requests(args.garage_log, log_start)
    result = {
        "label": args.label,
        "exit": code,
        "wall_s": round(wall, 4),
        "user_s": round(rusage.ru_utime, 4),
        "sys_s": round(rusage.ru_stime, 4),
        "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 4),
        "maxrss_kb": rusage.ru_maxrss,
        **peaks,
        "anon_series_kb": downsample(anon_series),
        "bytes": args.bytes,
    }
    if methods is not None:
        result["requests"] = sum(methods.values())
        result["requests_by_method"] = methods
        result["error_answers"] = errors
    for item in args.set or []:
        key, _, value = item.partition("=")
        result[key] = int(value) if value.isdigit() else value
    with open(args.out, "a") as out:
        out.write(json.dumps(result, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "anon_series_kb"}, sort_keys=True))
    if code != 0:
        sys.exit(f"measure: {args.label}: command exited with status {code}")


# ---------------------------------------------------------------- wire


class CountingProxy:
    """A TCP proxy on 127.0.0.1:port to upstream; records (time, bytes) of
    every chunk sent upstream (request bodies and headers: the upload
    direction)."""

    def __init__(self, port, upstream):
        host, _, up_port = upstream.rpartition(":")
        self.upstream = (host, int(up_port))
        self.listener = socket.create_server(("127.0.0.1", port))
        self.lock = threading.Lock()
        self.sent = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self.lock:
                        self.sent.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def wire_rates(sent, window):
    """(total bytes, seconds from the first byte to the last, bytes/s over
    that span, the highest bytes/s of any `window` seconds)."""
    if len(sent) < 2:
        return sum(n for _, n in sent), 0.0, None, None
    first, last = sent[0][0], sent[-1][0]
    total = sum(n for _, n in sent)
    span = last - first
    peak = None
    if span >= window:
        j, in_window = 0, 0
        for t, n in sent:
            in_window += n
            while sent[j][0] < t - window:
                in_window -= sent[j][1]
                j += 1
            peak = max(peak or 0, in_window / window)
    return total, span, total / span if span else None, peak


def cmd_wire(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    proxy = CountingProxy(args.listen, args.upstream)
    start = time.monotonic()
    code = subprocess.call(cmd)
    wall = time.monotonic() - start
    with proxy.lock:
        sent = list(proxy.sent)
    total, span, rate, peak = wire_rates(sent, args.window)
    result = {
        "label": args.label,
        "wire": True,
        "exit": code,
        "wall_s": round(wall, 3),
        "wire_bytes": total,
        "wire_span_s": round(span, 3),
        "wire_rate": rate,
        "wire_peak_rate": peak,
        "window_s": args.window,
        "limit": args.limit,
    }
    for item in args.set or []:
        key, _, value = item.partition("=")
        result[key] = int(value) if value.isdigit() else value
    with open(args.out, "a") as out:
        out.write(json.dumps(result, sort_keys=True) + "\n")
    print(json.dumps(result, sort_keys=True))
    if code != 0:
        sys.exit(f"wire: {args.label}: command exited with status {code}")


# ---------------------------------------------------------------- idle


def process_cpu(pid):
    """(CPU seconds from /proc/PID/stat ticks, CPU ns summed over threads' schedstat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK"), ns


def cmd_idle(args):
    time.sleep(args.settle)
    status = read_status(args.pid) or {}
    s0, ns0 = process_cpu(args.pid)
    t0 = time.monotonic()
    time.sleep(args.seconds)
    s1, ns1 = process_cpu(args.pid)
    elapsed = time.monotonic() - t0
    status_after = read_status(args.pid) or {}
    result = {
        "label": args.label,
        "seconds": round(elapsed, 2),
        "cpu_s_ticks": round(s1 - s0, 4),
        "cpu_s_schedstat": round((ns1 - ns0) / 1e9, 6),
        "core_percent": round(100 * (ns1 - ns0) / 1e9 / elapsed, 4),
        "anon_kb_before": status.get("RssAnon"),
        "anon_kb_after": status_after.get("RssAnon"),
        "threads": len(os.listdir(f"/proc/{args.pid}/task")),
    }
    for item in args.set or []:
        key, _, value = item.partition("=")
        result[key] = int(value) if value.isdigit() else value
    with open(args.out, "a") as out:
        out.write(json.dumps(result, sort_keys=True) + "\n")
    print(json.dumps(result, sort_keys=True))


# ---------------------------------------------------------------- journal


SEGMENT_BYTES = 8  # each generated segment: its position, 8 bytes little-endian


def segment_bytes(position):
    return position.to_bytes(SEGMENT_BYTES, "little")


def snapshot_bytes(position):
    return b"snapshot" + position.to_bytes(8, "little")


def journal_batch(stream, position):
    """The generated record at `position`: (size, crc, key, name)."""
    crc = zlib.crc32(segment_bytes(position))
    key = f"{stream}/batches/{position:016x}-{position:016x}"
    return SEGMENT_BYTES, crc, key, f"data-{position}.log"


def batch_line(stream, position):
    """The journal line (v2, CRC32 and body) of the batch at `position`."""
    size, crc, key, name = journal_batch(stream, position)
    body = (
        f"batch first={position} last={position} size={size} crc32={crc:08x} key={key}"
        f" encoding=identity stored_size={size} stored_crc32={crc:08x}"
        f" seg={position},{name},{size},{crc:08x},0,{size}"
    )
    return f"{zlib.crc32(body.encode()):08x} {body}\n"


def snapshot_line(stream, position):
    """The journal line (v2) of the snapshot at `position`."""
    data = snapshot_bytes(position)
    crc = zlib.crc32(data)
    body = (
        f"snapshot position={position} size={len(data)} crc32={crc:08x}"
        f" key={stream}/snapshots/{position:016x}"
        f" encoding=identity stored_size={len(data)} stored_crc32={crc:08x}"
    )
    return f"{zlib.crc32(body.encode()):08x} {body}\n"


def snapshot_positions(count, every):
    """Snapshots every `every` positions in the second half of `count`
    (the first half is what a restore replays from the first batch)."""
    if not every:
        return range(0)
    first = (count // 2 // every + 1) * every
    return range(first, count + 1, every)


def cmd_journal(args):
    """COUNT one-segment batch records (the common shape, 8-byte segments so
    that the archive can hold them for real) and, with --snapshot-every K, a
    snapshot record after every K-th batch of the second half, as a real run
    writes them (v2)."""
    snapshots = set(snapshot_positions(args.count, args.snapshot_every))
    with open(args.path, "w") as out:
        out.write("walship-manifest v2\n")
        lines = []
        for position in range(1, args.count + 1):
            lines.append(batch_line(args.stream, position))
            if position in snapshots:
                lines.append(snapshot_line(args.stream, position))
            if len(lines) >= 10000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))


def cmd_archive(args):
    """The file-target archive of `journal`'s records, as a real run leaves
    it: every batch object (its 8 bytes) and snapshot object with its record
    object, the level-0 record objects of the last --tail records (v2,
    exactly as walship writes them; the first `run --once` compacts the
    rest from the journal, as the daemon does), and with --state the state
    directory's binding to this archive."""
    batches = os.path.join(args.root, args.stream, "batches")
    records = os.path.join(args.root, args.stream, "manifest")
    snapshots = os.path.join(args.root, args.stream, "snapshots")
    for d in (batches, records, snapshots):
        os.makedirs(d, exist_ok=True)
    header = "walship-manifest v2\n"
    for position in range(1, args.count + 1):
        _, _, key, _ = journal_batch(args.stream, position)
        with open(os.path.join(args.root, key), "wb") as out:
            out.write(segment_bytes(position))
        if position > args.count - args.tail:
            with open(os.path.join(records, f"{position:016x}-{position:016x}.batch"), "w") as out:
                out.write(header + batch_line(args.stream, position))
    for position in snapshot_positions(args.count, args.snapshot_every):
        with open(os.path.join(snapshots, f"{position:016x}"), "wb") as out:
            out.write(snapshot_bytes(position))
        with open(os.path.join(records, f"snapshot-{position:016x}"), "w") as out:
            out.write(header + snapshot_line(args.stream, position))
    if args.state:
        os.makedirs(os.path.join(args.state, args.stream), exist_ok=True)
        with open(os.path.join(args.state, args.stream, "target"), "w") as out:
            out.write(f"file://{os.path.abspath(args.root)}\n")


LIST_PAGE = 1000  # keys per ListObjectsV2 page, and per DeleteObjects request


def cmd_target_requests(args):
    """Count the file target's debug lines as S3 requests: one per PUT, GET
    and HEAD, one per started page of 1,000 listed keys (at least one), one
    per started 1,000 deleted keys."""
    counts = {"PUT": 0, "GET": 0, "HEAD": 0, "LIST": 0, "DELETE": 0}
    pattern = re.compile(r"file target: (PUT|GET|HEAD|LIST|DELETE)\b(?:.*: (\d+) keys| (\d+) keys)?")
    with open(args.log, errors="replace") as f:
        for line in f:
            m = pattern.search(line)
            if not m:
                continue
            method, listed, deleted = m.group(1), m.group(2), m.group(3)
            if method == "LIST":
                counts["LIST"] += max(1, -(-int(listed) // LIST_PAGE))
            elif method == "DELETE":
                counts["DELETE"] += -(-int(deleted) // LIST_PAGE)
            else:
                counts[method] += 1
    counts["total"] = sum(counts.values())
    print(json.dumps(counts, sort_keys=True))


# ---------------------------------------------------------------- report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mib_of(kib):
    return None if kib is None else kib / 1024


def summarize(rows):
    """Medians of one tool on one dataset across rounds."""
    def col(key):
        return [r.get(key) for r in rows]

    wall = median(col("wall_s"))
    cpu = median(col("cpu_s"))
    nbytes = rows[0].get("bytes") or 0
    return {
        "n": len(rows),
        "wall_s": wall,
        "mib_s": nbytes / MIB / wall if wall else None,
        "cpu_s": cpu,
        "cpu_per_gib": cpu / (nbytes / GIB) if nbytes else None,
        "maxrss_mib": mib_of(median(col("proc_hwm_kb"))),
        "anon_mib": mib_of(median(col("tree_anon_kb"))),
        "anon_max_mib": mib_of(max(col("tree_anon_kb"))),
        "file_mib": mib_of(median(col("tree_file_kb"))),
        "requests": median(col("requests")),
        "by_method": {m: median([(r.get("requests_by_method") or {}).get(m, 0) for r in rows])
                      for m in sorted({m for r in rows for m in (r.get("requests_by_method") or {})})},
        "batches": rows[0].get("batches"),
        "wall_max_s": max(col("wall_s")),
        "errors": sum(v for r in rows for k, v in (r.get("error_answers") or {}).items() if k != "server"),
        "server_errors": sum((r.get("error_answers") or {}).get("server", 0) for r in rows),
        "bytes": nbytes,
    }


def group(rows, section):
    out = {}
    for r in rows:
        if r.get("section") != section:
            continue
        out.setdefault((r["dataset"], r["tool"]), []).append(r)
    return {k: summarize(v) for k, v in out.items()}


def table(headers, body):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def transfer_table(stats, datasets, tools):
    body = []
    for d in datasets:
        for t in tools:
            s = stats.get((d, t))
            if not s:
                continue
            body.append([
                d, t, s["n"], s["wall_s"], s["wall_max_s"], s["mib_s"], s["cpu_s"], s["cpu_per_gib"],
                s["maxrss_mib"], s["anon_mib"], s["file_mib"],
                int(s["requests"]) if s["requests"] is not None else None, s["errors"],
                s["server_errors"],
            ])
    return table(
        ["data", "tool", "runs", "wall s", "wall max s", "MiB/s", "CPU s", "CPU s/GiB",
         "peak RSS MiB", "peak anon MiB", "peak file MiB", "requests", "4xx/5xx answers (all runs)",
         "Garage ERROR lines (all runs)"],
        body,
    )


def anon_growth_mib(series):
    """Median anon of a run's last quarter minus its second quarter, MiB
    (the first quarter is start-up: threads, connections, allocator arenas)."""
    quarter = len(series) // 4
    if quarter < 1:
        return 0.0
    second, last = series[quarter:2 * quarter], series[-quarter:]
    return (statistics.median(last) - statistics.median(second)) / 1024


def ratio(a, b):
    return a / b if a is not None and b else None


def wire_table(rows):
    body = []
    for r in rows:
        rate, peak, limit = r.get("wire_rate"), r.get("wire_peak_rate"), r["limit"]
        body.append([r["label"], r["wire_bytes"] / MIB, r["wire_span_s"], limit / 1024,
                     None if rate is None else rate / 1024, None if rate is None else rate / limit,
                     None if peak is None else peak / limit])
    return table(["run", "MiB sent", "seconds", "limit KiB/s", "on the wire KiB/s",
                  "wire / limit", f"busiest {rows[0]['window_s']} s / limit"], body)



def round_ratios(measured, section, dataset, tool, other):
    """Throughput of `tool` over `other` in each round both ran (wall of
    other / wall of tool), in round order."""
    walls = {}
    for r in measured:
        if r.get("section") == section and r.get("dataset") == dataset and r.get("tool") in (tool, other):
            walls.setdefault(r.get("round"), {})[r["tool"]] = r["wall_s"]
    return [w[other] / w[tool] for _, w in sorted(walls.items()) if tool in w and other in w and w[tool]]


def latency_rounds(measured, section, dataset, tool, other):
    """(round, wall of tool, wall of other, tool / other) for each round in
    which both ran, in round order."""
    walls = {}
    for r in measured:
        if r.get("section") == section and r.get("dataset") == dataset and r.get("tool") in (tool, other):
            walls.setdefault(r.get("round"), {})[r["tool"]] = r["wall_s"]
    return [(n, w[tool], w[other], w[tool] / w[other])
            for n, w in sorted(walls.items()) if tool in w and other in w and w[other]]


# PostgreSQL's push rounds: (dataset, what it measures).
PUSH_MODES = (("push", "push, no daemon"), ("push-daemon", "push through the running daemon"))


def budgets(s3, restore, walship_runs, idle, binary, wire=(), fs=None, fetch=None, measured=()):
    """(name, measured, limit text, PASS/MISS) rows."""
    rows = []

    def add(name, value, limit, ok, unit="x"):
        digits = 4 if unit == "%" else 2
        shown = "-" if value is None else (f"{value:.{digits}f}{unit}" if unit else fmt(value))
        rows.append([name, shown, limit, "-" if ok is None else ("PASS" if ok else "MISS")])

    def throughput(section, stats, dataset, other, limit, what):
        w, c = stats.get((dataset, "walship")), stats.get((dataset, other))
        if not (w and c):
            return
        r = ratio(w["mib_s"], c["mib_s"])
        add(f"{what}: walship / {other} (medians)", r, f">= {limit}x", r >= limit)
        rounds = round_ratios(measured, section, dataset, "walship", other)
        if rounds:
            worst = min(rounds)
            add(f"  the same, worst of {len(rounds)} rounds", worst, f">= {limit}x", worst >= limit)

    throughput("s3", s3, "large", "curl", 1.15, "throughput, 16 MiB segments")
    throughput("s3", s3, "large", "curl-1proc", 1.0, "throughput, 16 MiB segments")
    w, c = s3.get(("large", "walship")), s3.get(("large", "curl"))
    if w and c:
        r = ratio(w["cpu_per_gib"], c["cpu_per_gib"])
        add("client CPU per GiB, 16 MiB segments: walship / curl", r, "<= 1.0x", r <= 1.0)
    w, c = s3.get(("small", "walship")), s3.get(("small", "curl"))
    if w and c:
        r = ratio(w["mib_s"], c["mib_s"])
        add("throughput, 64 KiB segments: walship / curl", r, ">= 5x", r >= 5)
        r = ratio(w["requests"], c["requests"])
        add("requests, 64 KiB segments: walship / curl", r, "far fewer (<= 0.1x)", r <= 0.1)
        r = ratio(w["cpu_per_gib"], c["cpu_per_gib"])
        add("client CPU per GiB, 64 KiB segments: walship / curl", r, "<= 1.0x", r <= 1.0)
    if w and w.get("batches"):
        # Steady state: the object and its record (PUTs) per batch; the
        # start-up's listings (GET) and exists-checks (HEAD) apart.
        methods, batches = w["by_method"], w["batches"]
        r = methods.get("PUT", 0) / batches
        add(f"requests per batch, 64 KiB segments (PUTs over {batches} batches)", r, "<= 2", r <= 2,
            unit="")
        heads, lists = methods.get("HEAD", 0), methods.get("GET", 0)
        add("  exists-checks (HEAD) per run: only the first batch after the start", heads, "<= 1",
            heads <= 1, unit="")
        # A first run knows nothing: it lists the records, lists their first
        # page again (a listing is no snapshot: src/catalog/remote.rs), and
        # lists the batch objects; the daemon lists nothing after its start.
        add("  listings (GET) per run: only at the start", lists, "<= 4", lists <= 4, unit="")
    for dataset, limit in (("large", 1.5), ("small", 1.0)):
        w, c = (fs or {}).get((dataset, "walship")), (fs or {}).get((dataset, "cp+sync"))
        if w and c:
            r = ratio(w["wall_s"], c["wall_s"])
            add(f"file target, {dataset} segments: wall walship / cp + sync", r,
                f"<= {limit}x" if limit > 1 else "< 1.0x", r <= limit if limit > 1 else r < limit)
    throughput("fetch", fetch or {}, "large", "curl", 1.5, "restore from S3, 16 MiB segments")
    throughput("fetch", fetch or {}, "small", "curl", 1.5, "restore from S3, 64 KiB segments")
    a, r_ = restore.get(("many", "archive")), restore.get(("many", "restore"))
    if a and r_:
        r = ratio(r_["wall_s"], a["wall_s"])
        add("restore of many small segments: wall restore / archive", r, "<= 1.0x", r <= 1.0)
        c = restore.get(("many", "cp+sync"))
        if c:
            add("  (reference: wall restore / cp -r + sync of the same files)",
                ratio(r_["wall_s"], c["wall_s"]), "-", None)
    if walship_runs:
        peaks = [r["tree_anon_kb"] / 1024 for r in walship_runs]
        worst = max(peaks)
        add(f"walship peak anonymous memory, worst of {len(peaks)} runs (4 streams included)",
            worst, "< 16 MiB", worst < 16, unit=" MiB")
        # Flat while the archive grows: anon in the last quarter of each run
        # against the second (the first is start-up).
        growth = max(anon_growth_mib(r.get("anon_series_kb") or []) for r in walship_runs)
        add("  anon growth during a run as the archive grows (worst run)", growth,
            "flat (< 1 MiB)", growth < 1, unit=" MiB")
        # Flat whatever the segment size: one stream to S3, 16 MiB to
        # 256 MiB segments, objects of 16 MiB to 256 MiB.
        sized = [r["tree_anon_kb"] / 1024 for r in walship_runs
                 if r.get("section") in ("s3", "sweep") and r.get("dataset") in ("large", "xl")]
        if sized:
            spread = max(sized) - min(sized)
            add(f"  anon spread over segment and object sizes, 16-256 MiB ({len(sized)} runs)",
                spread, "flat (< 1 MiB)", spread < 1, unit=" MiB")
    commands = [r for r in measured if r.get("section") == "manifest"]
    if commands:
        worst = max(commands, key=lambda r: r["tree_anon_kb"])
        peak = worst["tree_anon_kb"] / 1024
        add(f"peak anonymous memory of every command over the {worst.get('records', '?')}-record manifest, "
            f"worst of {len(commands)} runs ({worst['label'].split(': ', 1)[-1]})",
            peak, "< 16 MiB", peak < 16, unit=" MiB")
    for row in idle:
        if row.get("budget") == "yes":
            add(f"idle CPU, {row['label']}", row["core_percent"], "< 0.02% of a core",
                row["core_percent"] < 0.02, unit="%")
    for r in wire:
        if r.get("wire_rate"):
            off = abs(r["wire_rate"] / r["limit"] - 1) * 100
            add(f"bandwidth_limit accuracy, {r['label']}", off, "within 5 %", off <= 5, unit=" %")
    for dataset, what in PUSH_MODES:
        rounds = [r for _, _, _, r in latency_rounds(measured, "postgres", dataset, "walship", "curl")]
        if rounds:
            mid = median(rounds)
            add(f"{what}: 16 MiB WAL segment, wall push / curl PUT (median of {len(rounds)} rounds)",
                mid, "<= 1.2x", mid <= 1.2)
            add("  the same, worst round", max(rounds), "<= 1.2x", max(rounds) <= 1.2)
    if binary:
        mib = int(binary) / MIB
        add("stripped release binary (zstd linked in)", mib, "< 4.5 MiB", mib < 4.5, unit=" MiB")
    return rows


def cmd_report(args):
    rows = load(args.file)
    invalid = {r["invalidate"]: r["reason"] for r in rows if "invalidate" in r}
    failed = [r for r in rows if "wall_s" in r and (r["exit"] != 0 or r["label"] in invalid)]
    measured = [r for r in rows if "wall_s" in r and r not in failed]
    idle = [r for r in rows if "core_percent" in r]
    wire = [r for r in rows if r.get("wire") and r["exit"] == 0]
    facts = {r["fact"]: r["value"] for r in rows if "fact" in r}
    out = []
    s3 = group(measured, "s3")
    s3_tools = ["walship", "curl", "curl-1proc", "rclone"]
    if s3:
        out.append("### S3 (Garage): walship run --once vs curl vs rclone (medians)\n")
        out.append(transfer_table(s3, ["large", "small"], s3_tools))
    fs = group(measured, "file")
    if fs:
        out.append("\n### File target: walship run --once vs cp + sync (medians)\n")
        out.append(transfer_table(fs, ["large", "small"], ["walship", "cp+sync"]))
        rel = []
        for d in ["large", "small"]:
            w, c = fs.get((d, "walship")), fs.get((d, "cp+sync"))
            if w and c:
                rel.append([d, ratio(w["wall_s"], c["wall_s"]), ratio(w["cpu_s"], c["cpu_s"])])
        out.append("\n" + table(["data", "wall walship / cp+sync", "CPU walship / cp+sync"], rel))
    restore = group(measured, "restore")
    if restore:
        out.append("\n### Restore of many small segments vs archiving them (file target, medians)\n")
        out.append(transfer_table(restore, ["many"], ["archive", "restore", "cp+sync"]))
    fetch = group(measured, "fetch")
    if fetch:
        out.append("\n### Restore from S3: walship restore vs curl GETting the objects one by one (medians)\n")
        out.append(transfer_table(fetch, ["large", "small"], ["walship", "curl"]))
    pg = group(measured, "postgres")
    if pg:
        out.append("\n### PostgreSQL: walship push vs one curl PUT of the same 16 MiB WAL segment; "
                   "replay through fetch (medians)\n")
        out.append(transfer_table(pg, [d for d, _ in PUSH_MODES] + ["replay-0ms", "replay-200ms"],
                                  ["walship", "curl", "prefetch-0", "prefetch-8"]))
        body = [[what, n, push, curl, f"{r:.2f}x"]
                for dataset, what in PUSH_MODES
                for n, push, curl, r in latency_rounds(measured, "postgres", dataset, "walship", "curl")]
        if body:
            out.append("\nEach round side by side (one new segment per round):\n")
            out.append(table(["mode", "round", "push s", "curl s", "push / curl"], body))
    other = [r for r in measured if r.get("section") in ("streams4", "manifest", "sweep", "rebuild")]
    if other:
        out.append("\n### walship alone: 4 streams, segment-size sweep, 1,000,000-record manifest, remote manifest (rebuild)\n")
        body = []
        by_label = {}
        for r in other:
            by_label.setdefault(r["label"], []).append(r)
        for label, rs in by_label.items():
            s = summarize(rs)
            body.append([label, s["n"], s["wall_s"], s["mib_s"] if s["bytes"] else None, s["cpu_s"],
                         s["maxrss_mib"], s["anon_max_mib"], s["file_mib"],
                         int(s["requests"]) if s["requests"] is not None else None])
        out.append(table(["run", "runs", "wall s", "MiB/s", "CPU s", "peak RSS MiB",
                          "peak anon MiB", "peak file MiB", "requests"], body))
    if idle:
        out.append("\n### Idle daemon (`walship run`, no new data)\n")
        out.append(table(
            ["case", "seconds", "CPU s (schedstat)", "CPU s (ticks)", "% of a core", "threads",
             "anon KiB before/after"],
            [[r["label"], r["seconds"], f"{r['cpu_s_schedstat']:.6f}", r["cpu_s_ticks"],
              f"{r['core_percent']:.4f}",
              r["threads"], f"{r['anon_kb_before']}/{r['anon_kb_after']}"] for r in idle]))
    if wire:
        out.append("\n### bandwidth_limit: bytes on the wire, counted by a proxy\n")
        out.append(wire_table(wire))
    if failed:
        out.append("\n### Failed runs (left out of the medians above)\n")
        out.append(table(["run", "why", "error answers"], [
            [r["label"], invalid.get(r["label"], f"exit status {r['exit']}"),
             json.dumps(r.get("error_answers") or {}, sort_keys=True)] for r in failed]))
    if facts:
        out.append("\n### Facts\n")
        out.append(table(["fact", "value"], [[k, v] for k, v in facts.items()]))
    # Every archiving and restoring run, plus the daemon starting on the big
    # manifest (every command over it has a budget line of its own).
    walship_runs = [r for r in measured
                    if r.get("tool") in ("walship", "walship-daemon-open", "archive", "restore")]
    out.append("\n### Budgets (ratios from this run)\n")
    out.append(table(["budget", "measured", "limit", "verdict"],
                     budgets(s3, restore, walship_runs, idle, facts.get("stripped binary bytes"), wire,
                             fs, fetch, measured)))
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gen")
    p.add_argument("dir")
    p.add_argument("count", type=int)
    p.add_argument("size", type=int)
    p.add_argument("--start", type=int, default=1)
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("measure")
    p.add_argument("--out", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--set", action="append")
    p.add_argument("--garage-log")
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--stdout", help="file for the command's standard output")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("idle")
    p.add_argument("--out", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--settle", type=float, default=5)
    p.add_argument("--set", action="append")
    p.set_defaults(func=cmd_idle)

    p = sub.add_parser("journal")
    p.add_argument("path")
    p.add_argument("stream")
    p.add_argument("count", type=int)
    p.add_argument("--snapshot-every", type=int, default=0)
    p.set_defaults(func=cmd_journal)

    p = sub.add_parser("archive")
    p.add_argument("root")
    p.add_argument("stream")
    p.add_argument("count", type=int)
    p.add_argument("--tail", type=int, default=5000)
    p.add_argument("--snapshot-every", type=int, default=0)
    p.add_argument("--state", help="the state directory to bind to this archive")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("target-requests")
    p.add_argument("log")
    p.set_defaults(func=cmd_target_requests)
    p = sub.add_parser("wire")
    p.add_argument("--out", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--window", type=float, default=10)
    p.add_argument("--set", action="append")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_wire)

    p = sub.add_parser("report")
    p.add_argument("file")
    p.add_argument("--markdown")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
