#!/usr/bin/env python3
"""Incremental-path cost of exactly-once delivery (sync.exactly_once) on a standalone and on a
cluster target.

    python3 bench/exactly_once.py                 # 4,000,000-write burst, both modes, 2 runs each
    WRITES=1000000 RUNS=1 python3 bench/exactly_once.py
    TARGETS=cluster python3 bench/exactly_once.py # only the 3-master cluster target

TARGETS (default "standalone,cluster"): a standalone Redis 7.0 target, and/or a cluster of three
Redis 7.0 masters (created with redis-cli --cluster create; target CPU = the sum of the three).

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
SS = os.environ.get("SS", os.path.join(ROOT, "target", "release", "shardsync"))
# Extra target server arguments, e.g. DST_ARGS="--maxmemory 4gb" (one transaction at a time).
DST_ARGS = os.environ.get("DST_ARGS", "").split()
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


def free_cluster_port():
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(1000):
        p = 20000 + int.from_bytes(os.urandom(2), "big") % 30000
        try:
            for q in (p, p + 10000):
                s = socket.socket()
                s.bind(("127.0.0.1", q))
                s.close()
            return p
        except OSError:
            continue
    raise SystemExit("no free cluster port")


def server(tmp, name, extra, port=None):
    port = port or free_port()
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


def cluster(tmp, tag):
    """Three cluster-enabled masters sharing the slots; returns (processes, ports)."""
    nodes = [server(tmp, f"{tag}-n{i}", ["--cluster-enabled", "yes", "--cluster-config-file",
                                         "nodes.conf"], free_cluster_port()) for i in range(3)]
    ports = [p for _, p in nodes]
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-yes"], capture_output=True, check=True)
    for _ in range(200):
        if all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports):
            return [n for n, _ in nodes], ports
        time.sleep(0.05)
    raise SystemExit("the target cluster did not become ok")


def status(addr):
    with urllib.request.urlopen(f"http://{addr}/status", timeout=5) as r:
        return json.load(r)


def one(exact, tmp, target="standalone"):
    src, sp = server(tmp, f"src-{exact}-{time.time()}", [
        "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "1gb",
        "--client-output-buffer-limit", "replica 0 0 0"])
    if target == "cluster":
        dsts, dports = cluster(tmp, f"dst-{exact}-{time.time()}")
    else:
        dst, dp = server(tmp, f"dst-{exact}-{time.time()}", DST_ARGS)
        dsts, dports = [dst], [dp]
    dp = dports[0]
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
        c0 = (cpu_s(ss.pid), sum(cpu_s(d.pid) for d in dsts))
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
        c1 = (cpu_s(ss.pid), sum(cpu_s(d.pid) for d in dsts))
        return {
            "burst": t1 - t0, "catch_up": t2 - t1, "rate": WRITES / (t2 - t0),
            "ss_cpu": c1[0] - c0[0], "dst_cpu": c1[1] - c0[1],
            "keys": sum(int(cli(p, "DBSIZE").strip() or 0) for p in dports),
        }
    finally:
        for p in (ss, src, *dsts):
            p.kill()
            p.wait()


def main():
    if not os.path.exists(SS):
        raise SystemExit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="shardsync-exact-bench-")
    try:
        rows = []
        targets = os.environ.get("TARGETS", "standalone,cluster").split(",")
        for target in targets:
            for run in range(RUNS):
                for exact in (False, True):
                    r = one(exact, tmp, target)
                    r["mode"] = ("exactly_once" if exact else "at-least-once") + f" ({target})"
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
