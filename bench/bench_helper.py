#!/usr/bin/env python3
"""Helpers for bench/full_sync.sh (stdlib only).

  free-port [cluster]                print a free loopback TCP port (never 6379); with cluster,
                                     one whose bus port (+10000) is free too
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

  replicate R1,R2 S1,S2 N1,N2 TIMEOUT  the same for several replicas at once (one per source
                                     shard); prints the seconds until the last one is done
  wait-ready PORTS SPEC T0 TIMEOUT   wait until SPEC holds on the comma-separated PORTS: dbsize:N
                                     (summed), hlen:KEY:N or strlen:KEY:N; prints seconds since T0
  gen-cluster N MIX OUT PORT         like gen, one file OUT.<port> per master of the cluster PORT
                                     belongs to (keys routed by CRC16 slot, CLUSTER SLOTS)
  big-hash KEY N OUT                 HSETs of 1000 fields (16-byte values) building one N-field hash
  big-string KEY MIB OUT             SET + APPENDs of 1 MiB random bytes: one MIB-MiB string
  pace PORT RATE SECS                SETs (64-byte values, 1M random keys) paced to RATE/s in 5 ms
                                     ticks, pipelined; prints the achieved writes/s
  follow SRC SECS NATIVE STATUS      while a writer runs SECS s: samples the source's offset, the
                                     native replica's and shardsync's applied offset (/status at
                                     STATUS); then waits for both to reach the source's final
                                     offset; prints "catchup_native catchup_shardsync" seconds

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


def free_port_cluster():
    """A port P with P + 10000 (the cluster bus) free too."""
    rnd = random.Random()
    while True:
        p = rnd.randrange(20000, 30000)
        try:
            for q in (p, p + 10000):
                s = socket.socket()
                s.bind(("127.0.0.1", q))
                s.close()
        except OSError:
            continue
        if p != 6379:
            return p


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


def data_keys(c, d):
    """DBSIZE `d` less shardsync's exactly-once progress keys (on by default on a standalone
    target: one key per source shard, written when the full sync starts)."""
    r = c.cmd("KEYS", "__shardsync:progress:*")
    return d - len(r) if isinstance(r, list) else d


def replicate(replicas, srcs, ns, timeout):
    conns = [Conn(r) for r in replicas]
    t0 = time.time()
    for c, src in zip(conns, srcs):
        r = c.cmd("REPLICAOF", "127.0.0.1", src)
        if isinstance(r, Exception):
            sys.exit("REPLICAOF failed: %s" % r)
    todo = set(range(len(conns)))
    while todo:
        for i in sorted(todo):
            c = conns[i]
            info = c.cmd("INFO", "replication")
            if isinstance(info, bytes) and b"master_link_status:up" in info and dbsize(c) == ns[i]:
                todo.discard(i)
        if not todo:
            break
        if time.time() - t0 > timeout:
            sys.exit("timeout: replicas %s not synced after %ds" % ([replicas[i] for i in todo], timeout))
        time.sleep(POLL)
    print("%.3f" % (time.time() - t0))


def wait_ready(ports, spec, t0, timeout):
    conns = [Conn(p) for p in ports]
    kind, *rest = spec.split(":")
    want = int(rest[-1])
    while True:
        if kind == "dbsize":
            have = sum(dbsize(c) for c in conns)
            if have >= want:
                have = sum(data_keys(c, dbsize(c)) for c in conns)
        else:
            r = conns[0].cmd("HLEN" if kind == "hlen" else "STRLEN", ":".join(rest[:-1]))
            have = r if isinstance(r, int) else -1
        if have == want:
            print("%.3f" % (time.time() - t0))
            return
        if have > want:
            sys.exit("%s on %s is %d, more than %d" % (kind, ports, have, want))
        if time.time() - t0 > timeout:
            sys.exit("timeout: %s on %s is %d after %ds, expected %d" % (kind, ports, have, timeout, want))
        time.sleep(POLL)


def gen_cluster(n, mix, out, port):
    """gen, then each command to the file of the master serving its key's slot."""
    import binascii
    slots = Conn(port).cmd("CLUSTER", "SLOTS")
    owner = [0] * 16384
    for lo, hi, master, *_ in slots:
        for s in range(lo, hi + 1):
            owner[s] = master[1]
    gen(n, mix, out)
    data = open(out, "rb").read()
    os.remove(out)
    files = {p: open("%s.%d" % (out, p), "wb", buffering=1 << 22) for p in set(owner)}
    pos = 0
    while pos < len(data):
        start = pos
        end = data.index(b"\r\n", pos)
        argc = int(data[pos + 1:end])
        pos = end + 2
        key = None
        for a in range(argc):
            end = data.index(b"\r\n", pos)
            ln = int(data[pos + 1:end])
            if a == 1:
                key = data[end + 2:end + 2 + ln]
            pos = end + 4 + ln
        files[owner[binascii.crc_hqx(key, 0) % 16384]].write(data[start:pos])
    for f in files.values():
        f.close()


def big_hash(key, n, out):
    rnd = random.Random(7)
    with open(out, "wb", buffering=1 << 22) as f:
        for start in range(0, n, 1000):
            args = [b"HSET", key]
            for i in range(start, min(n, start + 1000)):
                args += [b"field:%d" % i, base64.b64encode(rnd.randbytes(12))]
            f.write(resp(*args))


def big_string(key, mib, out):
    with open(out, "wb") as f:
        for i in range(mib):
            f.write(resp(b"SET" if i == 0 else b"APPEND", key, os.urandom(1 << 20)))


def pace(port, rate, secs):
    """Pipelined SETs at `rate`/s: every 5 ms the writes due so far are sent; replies are read
    as they come (each is +OK, 5 bytes)."""
    rnd = random.Random(3)
    val = base64.b64encode(rnd.randbytes(48))
    cmds = [b"*3\r\n$3\r\nSET\r\n$14\r\n%s\r\n$64\r\n%s\r\n" % (b"key:%010d" % rnd.randrange(1000000), val)
            for _ in range(4096)]
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sent = 0
    acked = acked_b = 0
    t0 = time.time()
    end = t0 + secs
    i = 0
    while True:
        now = time.time()
        if now >= end:
            break
        due = int((now - t0) * rate) - sent
        # at most 20000 writes unanswered: a source that falls behind slows the writer down
        if due > 0 and sent - acked < 20000:
            n = min(due, 20000 - (sent - acked))
            buf = b"".join(cmds[(i + k) & 4095] for k in range(n))
            i += n
            view = memoryview(buf)
            while view:
                try:
                    view = view[s.send(view):]
                except BlockingIOError:
                    try:
                        acked_b += len(s.recv(1 << 20))
                    except BlockingIOError:
                        time.sleep(0.0005)
            sent += n
        try:
            while True:
                got = s.recv(1 << 20)
                if not got:
                    sys.exit("source closed the connection")
                acked_b += len(got)
        except BlockingIOError:
            pass
        acked = acked_b // 5
        time.sleep(max(0.0, 0.005 - (time.time() - now)))
    s.setblocking(True)
    while acked_b < 5 * sent:
        acked_b += len(s.recv(1 << 20))
    print("%.0f" % (sent / (time.time() - t0)))


def repl_offset(c, field):
    info = c.cmd("INFO", "replication")
    for line in info.split(b"\r\n"):
        if line.startswith(field + b":"):
            return int(line.split(b":")[1])
    return -1


def applied_offset(addr):
    import json
    import urllib.request
    with urllib.request.urlopen("http://%s/status" % addr, timeout=5) as r:
        doc = json.load(r)
    return sum(sh.get("applied_offset", 0) for sh in doc["shards"])


def follow(src, secs, native, status):
    """Waits SECS (the writer runs meanwhile), then until both followers hold the source's
    offset of that moment; prints the seconds each needed after the end of the writes."""
    s, n = Conn(src), Conn(native)
    time.sleep(secs)
    want = repl_offset(s, b"master_repl_offset")
    t0 = time.time()
    done = [None, None]
    while None in done:
        if done[0] is None and repl_offset(n, b"master_repl_offset") >= want:
            done[0] = time.time() - t0
        if done[1] is None and applied_offset(status) >= want:
            done[1] = time.time() - t0
        if time.time() - t0 > 300:
            sys.exit("timeout: followers not caught up after 300 s")
        time.sleep(0.01)
    print("%.3f %.3f" % tuple(done))


def wait_dbsize(port, n, t0, timeout):
    c = Conn(port)
    while True:
        d = dbsize(c)
        if d >= n:
            d = data_keys(c, d)
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
        print(free_port_cluster() if a[1:] == ["cluster"] else free_port())
    elif a[0] == "gen":
        gen(int(a[1]), a[2], a[3])
    elif a[0] == "replicate":
        ints = lambda x: [int(v) for v in x.split(",")]
        replicate(ints(a[1]), ints(a[2]), ints(a[3]), float(a[4]))
    elif a[0] == "wait-ready":
        wait_ready([int(p) for p in a[1].split(",")], a[2], float(a[3]), float(a[4]))
    elif a[0] == "gen-cluster":
        gen_cluster(int(a[1]), a[2], a[3], int(a[4]))
    elif a[0] == "big-hash":
        big_hash(a[1].encode(), int(a[2]), a[3])
    elif a[0] == "big-string":
        big_string(a[1].encode(), int(a[2]), a[3])
    elif a[0] == "pace":
        pace(int(a[1]), float(a[2]), float(a[3]))
    elif a[0] == "follow":
        follow(int(a[1]), float(a[2]), int(a[3]), a[4])
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
