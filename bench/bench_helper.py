#!/usr/bin/env python3
"""Helpers for bench/full_sync.sh (stdlib only).

  free-port                          print a free loopback TCP port (never 6379)
  gen N MIX OUT                      write N keys as RESP commands for `redis-cli --pipe`
  replicate REPLICA SRC N TIMEOUT    REPLICAOF, then wait for link up + DBSIZE == N; prints seconds
  wait-dbsize PORT N T0 TIMEOUT      wait until DBSIZE == N; prints seconds since T0 (epoch float)
  mset IN N OUT                      rewrite the `SET k v` commands of IN (as written by gen) as
                                     MSETs of N keys into OUT (other commands are copied)
  marker SRC TIMEOUT DST...           SET a marker key on SRC, then print for each DST the seconds
                                     until it holds the marker (the lag of a follower)
  log-times LOG T0                   strips ANSI colours from shardsync's LOG in place; prints the
                                     seconds since T0 of "full sync started" and of "RDB received
                                     and handed to the writers", and the RDB size in bytes

Polling uses one persistent connection and a POLL_MS (default 10) ms sleep between probes, so the
cost on the measured server is one O(1) command per probe.
"""
import os
import re
import random
import socket
import sys
import time
import base64

POLL = float(os.environ.get("POLL_MS", "10")) / 1000.0


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p != 6379:
            return p


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def gen(n, mix, path):
    """Strings: key:%010d -> 64 random printable bytes (base64 of 48 random bytes, so RDB LZF
    compression does not shrink them). Mixed: 80 % strings (1 in 16 of them with a TTL),
    10 % hashes of 8 fields, 5 % lists of 8 elements, 5 % sorted sets of 8 members."""
    rnd = random.Random(42)
    rb = rnd.randbytes
    b64 = base64.b64encode
    with open(path, "wb", buffering=1 << 22) as f:
        buf = []
        for i in range(n):
            key = b"key:%010d" % i
            kind = 0
            if mix == "mixed":
                r = i % 20
                kind = 0 if r < 16 else (1 if r < 18 else (2 if r == 18 else 3))
            if kind == 0:
                v = b64(rb(48))
                if mix == "mixed" and i % 16 == 1:
                    buf.append(b"*5\r\n$3\r\nSET\r\n$14\r\n%s\r\n$64\r\n%s\r\n$2\r\nEX\r\n$5\r\n86400\r\n" % (key, v))
                else:
                    buf.append(b"*3\r\n$3\r\nSET\r\n$14\r\n%s\r\n$64\r\n%s\r\n" % (key, v))
            elif kind == 1:
                args = [b"HSET", key]
                for j in range(8):
                    args += [b"field%d" % j, b64(rb(12))]
                buf.append(resp(*args))
            elif kind == 2:
                buf.append(resp(b"RPUSH", key, *[b64(rb(12)) for _ in range(8)]))
            else:
                args = [b"ZADD", key]
                for j in range(8):
                    args += [b"%d" % rnd.randrange(1000000), b"member:%d" % j]
                buf.append(resp(*args))
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        self.s.sendall(resp(*args))
        return self.read()

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            return Exception(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)


def dbsize(c):
    r = c.cmd("DBSIZE")
    return r if isinstance(r, int) else -1  # -LOADING while a replica loads


def replicate(replica, src, n, timeout):
    c = Conn(replica)
    t0 = time.time()
    r = c.cmd("REPLICAOF", "127.0.0.1", src)
    if isinstance(r, Exception):
        sys.exit("REPLICAOF failed: %s" % r)
    while True:
        info = c.cmd("INFO", "replication")
        if isinstance(info, bytes) and b"master_link_status:up" in info and dbsize(c) == n:
            print("%.3f" % (time.time() - t0))
            return
        if time.time() - t0 > timeout:
            sys.exit("timeout: replica on %d has DBSIZE %d after %ds" % (replica, dbsize(c), timeout))
        time.sleep(POLL)


def wait_dbsize(port, n, t0, timeout):
    c = Conn(port)
    while True:
        d = dbsize(c)
        if d == n:
            print("%.3f" % (time.time() - t0))
            return
        if d > n:
            sys.exit("DBSIZE on %d is %d, more than %d" % (port, d, n))
        if time.time() - t0 > timeout:
            sys.exit("timeout: DBSIZE on %d is %d after %ds, expected %d" % (port, d, timeout, n))
        time.sleep(POLL)


def log_times(path, t0):
    from datetime import datetime
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(path, encoding="utf-8", errors="replace").read())
    open(path, "w").write(text)

    def at(marker):
        for line in text.splitlines():
            if marker in line:
                ts = line.split()[0]
                return "%.3f" % (datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - t0)
        return "nan"

    m = re.search(r"RDB received and handed to the writers.*rdb_bytes=(\d+)", text)
    print(at("full sync started"), at("RDB received and handed to the writers"), m.group(1) if m else 0)


def mset(src, n, dst):
    """Reads the RESP commands of `src` (only arrays of bulk strings, as `gen` writes them)."""
    data = open(src, "rb").read()
    pos, pairs, out = 0, [], []

    def flush():
        if pairs:
            out.append(resp(b"MSET", *pairs))
            pairs.clear()

    while pos < len(data):
        end = data.index(b"\r\n", pos)
        argc = int(data[pos + 1:end])
        pos = end + 2
        args = []
        for _ in range(argc):
            end = data.index(b"\r\n", pos)
            ln = int(data[pos + 1:end])
            args.append(data[end + 2:end + 2 + ln])
            pos = end + 4 + ln
        if argc == 3 and args[0] == b"SET":
            pairs += args[1:]
            if len(pairs) >= 2 * n:
                flush()
        else:
            flush()
            out.append(resp(*args))
    flush()
    open(dst, "wb").write(b"".join(out))


def marker(src, timeout, dsts):
    value = b"%.6f" % time.time()
    conns = [Conn(d) for d in dsts]
    Conn(src).cmd("SET", "bench:marker", value)
    t0 = time.time()
    lag = [None] * len(dsts)
    while any(x is None for x in lag):
        for i, c in enumerate(conns):
            if lag[i] is None and c.cmd("GET", "bench:marker") == value:
                lag[i] = time.time() - t0
        if time.time() - t0 > timeout:
            sys.exit("timeout: marker not on every follower after %ds" % timeout)
        time.sleep(0.001)
    print(" ".join("%.3f" % x for x in lag))


def main():
    a = sys.argv[1:]
    if a[0] == "free-port":
        print(free_port())
    elif a[0] == "gen":
        gen(int(a[1]), a[2], a[3])
    elif a[0] == "replicate":
        replicate(int(a[1]), int(a[2]), int(a[3]), float(a[4]))
    elif a[0] == "mset":
        mset(a[1], int(a[2]), a[3])
    elif a[0] == "marker":
        marker(int(a[1]), float(a[2]), [int(x) for x in a[3:]])
    elif a[0] == "log-times":
        log_times(a[1], float(a[2]))
    elif a[0] == "wait-dbsize":
        wait_dbsize(int(a[1]), int(a[2]), float(a[3]), float(a[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
