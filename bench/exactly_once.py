#!/usr/bin/env python3
"""Incremental-path cost of exactly-once delivery (sync.exactly_once) on a standalone target.

    python3 bench/exactly_once.py                 # 4,000,000-write burst, both modes, 2 runs each
    WRITES=1000000 RUNS=1 python3 bench/exactly_once.py

For each mode (exactly_once = false / true) it starts a fresh Redis 7.0 source and target on free
loopback ports, starts shardsync (target/release/shardsync, build it first) and waits for the
incremental phase, then fires a burst with redis-benchmark (-P 16 -c 50, SET and LPUSH, half the
writes each, random keys) and measures:
  - burst: redis-benchmark's wall time (the source's own pace),
  - catch-up: from the end of the burst until shardsync's applied offset (GET /status) reaches the
    source's master_repl_offset read at the end of the burst,
  - apply rate: writes / (burst + catch-up), i.e. the sustained rate shardsync applied,
  - CPU seconds of shardsync and of the target over the whole burst + catch-up.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SHARDSYNC_BIN_DIR", os.path.join(ROOT, ".deps", "bin"))
SS = os.path.join(ROOT, "target", "release", "shardsync")
WRITES = int(os.environ.get("WRITES", "4000000"))
RUNS = int(os.environ.get("RUNS", "2"))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


def server(tmp, name, extra):
    port = free_port()
    d = os.path.join(tmp, name)
    os.makedirs(d)
    p = subprocess.Popen(
        [os.path.join(BIN, "redis-server-7.0"), "--port", str(port), "--dir", d, "--save", "",
         "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if cli(port, "PING").strip() == "PONG":
            return p, port
        time.sleep(0.05)
    raise SystemExit(f"{name} did not start")


def status(addr):
    with urllib.request.urlopen(f"http://{addr}/status", timeout=5) as r:
        return json.load(r)


def one(exact, tmp):
    src, sp = server(tmp, f"src-{exact}-{time.time()}", [
        "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "1gb",
        "--client-output-buffer-limit", "replica 0 0 0"])
    dst, dp = server(tmp, f"dst-{exact}-{time.time()}", [])
    cfg = os.path.join(tmp, f"ss-{exact}.toml")
    with open(cfg, "w") as f:
        f.write(f"[sync]\nexactly_once = {'true' if exact else 'false'}\n")
    maddr = f"127.0.0.1:{free_port()}"
    state = tempfile.mkdtemp(dir=tmp)
    log = open(os.path.join(tmp, f"ss-{exact}.log"), "w")
    ss = subprocess.Popen([SS, "run", "--source", f"redis://127.0.0.1:{sp}", "--target",
                           f"redis://127.0.0.1:{dp}", "--state-dir", state, "--config", cfg,
                           "--metrics-addr", maddr, "--heartbeat-key", ""],
                          stdout=log, stderr=log)
    try:
        for _ in range(600):
            try:
                if status(maddr)["state"] == "incremental":
                    break
            except Exception:
                pass
            time.sleep(0.05)
        c0 = (cpu_s(ss.pid), cpu_s(dst.pid))
        t0 = time.monotonic()
        half = WRITES // 2
        subprocess.run(["redis-benchmark", "-p", str(sp), "-P", "16", "-c", "50", "-r", "1000000",
                        "-n", str(half), "-t", "set,lpush", "-q"],
                       stdout=subprocess.DEVNULL, check=True)
        t1 = time.monotonic()
        want = int([l for l in cli(sp, "INFO", "replication").splitlines()
                    if l.startswith("master_repl_offset:")][0].split(":")[1])
        while True:
            sh = status(maddr)["shards"][0]
            if sh["applied_offset"] >= want:
                break
            if time.monotonic() - t1 > 600:
                raise SystemExit("no catch-up within 600 s")
            time.sleep(0.01)
        t2 = time.monotonic()
        c1 = (cpu_s(ss.pid), cpu_s(dst.pid))
        return {
            "burst": t1 - t0, "catch_up": t2 - t1, "rate": WRITES / (t2 - t0),
            "ss_cpu": c1[0] - c0[0], "dst_cpu": c1[1] - c0[1],
            "keys": int(cli(dp, "DBSIZE").strip() or 0),
        }
    finally:
        for p in (ss, src, dst):
            p.kill()
            p.wait()


def main():
    if not os.path.exists(SS):
        raise SystemExit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="shardsync-exact-bench-")
    try:
        rows = []
        for run in range(RUNS):
            for exact in (False, True):
                r = one(exact, tmp)
                r["mode"] = "exactly_once" if exact else "at-least-once"
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
        print(f"| mode | burst ({WRITES:,} writes) | catch-up after the burst | applied writes/s | shardsync CPU-s | target CPU-s |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['mode']} | {r['burst']:.2f} s | {r['catch_up']:.2f} s | {r['rate']:,.0f} | "
                  f"{r['ss_cpu']:.2f} | {r['dst_cpu']:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
