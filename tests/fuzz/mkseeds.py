#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus-*/).

Run from anywhere: python3 tests/fuzz/mkseeds.py. The peer seeds carry
HMAC proofs computed from the key and the fixed nonces of fuzz_peer.h, so
the fuzzer starts from handshakes that succeed."""
import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"vmigrate-fuzz-key-0123456789abc"  # FUZZ_KEY
FIXED_NONCE = "5a" * 32                   # FUZZ_RANDOM_BYTE, 32 bytes, hex
DIAL_NAME = "g1"                          # FUZZ_DIAL_NAME
HELLO_NONCE = "0123456789abcdef" * 4


def proof(role, a, b, name):
    msg = "vmigrate-peer %s %s %s %s" % (role, a, b, name)
    return hmac.new(KEY, msg.encode(), hashlib.sha256).hexdigest()


def line(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def write(target, seeds):
    d = os.path.join(HERE, "corpus-" + target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old.startswith("seed-"):
            os.unlink(os.path.join(d, old))
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


def hello(**kw):
    h = {"op": "migrate-in", "name": "g1", "channels": 2, "transport": "tcp"}
    h.update(kw)
    return line(h)


write("peer_hello", {
    "plain": hello(),
    "keyed-valid": hello(nonce=HELLO_NONCE) +
        line({"proof": proof("dialer", HELLO_NONCE, FIXED_NONCE, "g1")}),
    "keyed-bad-proof": hello(nonce=HELLO_NONCE) + line({"proof": "00" * 32}),
    "keyed-short-nonce": hello(nonce="abcd") + line({"proof": "x"}),
    "rdma-many": hello(transport="rdma", channels=99),
    "channels-negative": hello(channels=-1),
    "name-slash": hello(name="../etc"),
    "name-dot": hello(name=".hidden"),
    "name-long": hello(name="n" * 64),
    "name-not-string": hello(name=7),
    "wrong-op": hello(op="migrate-data", token="ab" * 16),
    "probe": hello(op="probe", name="probe", job="check", channels=1),
    "replicate-lineage": hello(op="replicate-in", job="g1-repl-1", lineage="0a" * 16),
    "replicate-lineage-bad": hello(op="replicate-in", job="g1-repl-1", lineage="0A" * 17),
    "not-object": b"[1,2,3]\n",
    "no-newline": hello()[:-1],
    "empty-line": b"\n",
})

ok_reply = line({"ok": True, "data_port": 7100, "token": "ab" * 16})
write("peer_dial", {
    "plain-ok": ok_reply,
    "keyed-ok": line({"challenge": HELLO_NONCE,
                      "proof": proof("listener", FIXED_NONCE, HELLO_NONCE, DIAL_NAME)}) +
        ok_reply,
    "keyed-bad-proof": line({"challenge": HELLO_NONCE, "proof": "ff" * 32}) + ok_reply,
    "keyed-no-challenge": line({"proof": "ff" * 32}),
    "refused": line({"ok": False, "error": "a guest named 'g1' already runs on this host"}),
    "ok-odd-fields": line({"ok": True, "data_port": "seventy", "token": "t" * 100}),
    "ok-huge-port": line({"ok": True, "data_port": 2 ** 63 - 1, "token": ""}),
    "not-object": b"\"ok\"\n",
    "no-newline": ok_reply[:-1],
})


def msg(t, payload=b"", magic=0x4d474d56, reserved=0, length=None):
    n = len(payload) if length is None else length
    return struct.pack("<IHHI", magic, t, reserved, n) + payload


READY, LOADED, GO, RUNNING, ERROR, ROUND = 1, 2, 3, 4, 5, 6
sequence = (msg(READY) + msg(ROUND, struct.pack("<Q", 1)) + msg(ROUND, struct.pack("<Q", 2)) +
            msg(LOADED) + msg(GO) + msg(RUNNING))
write("mig_msg", {
    "sequence-nobuf": b"\x00" + sequence,
    "sequence-buf": b"\x03" + sequence,
    "error-text": b"\x03" + msg(ERROR, b"destination: guest memory did not verify"),
    "error-small-buf": b"\x01" + msg(ERROR, b"reason"),
    "round-short": b"\x03" + msg(ROUND, b"\x01"),
    "max-payload": b"\x02" + msg(ERROR, b"x" * 1024),
    "too-long": b"\x03" + msg(ERROR, length=1025),
    "bad-magic": b"\x03" + msg(READY, magic=0x12345678),
    "reserved-set": b"\x03" + msg(READY, reserved=1),
    "unknown-type": b"\x03" + msg(99, b"\x00\x01"),
    "truncated-payload": b"\x03" + msg(ERROR, b"abc", length=10),
    "truncated-header": b"\x03" + msg(READY)[:7],
})

start = {"cmd": "start", "name": "g1", "mem": 268435456, "vcpus": 2, "guest": "memtouch",
         "working_set": 67108864, "dirty_rate": 1000, "seed": 7, "fill_first": True,
         "content": "text", "dirty_mode": "ring", "prefill": ""}
peer = {"insecure": False, "tls_dir": "/etc/vmigrate/tls", "allow": "h1,h2",
        "key": "00112233445566778899aabbccddeeff", "io_timeout_ms": 5000,
        "handshake_timeout_ms": 10000, "data_port_lo": 7100, "data_port_hi": 7199}
migrate = {"cmd": "migrate", "name": "g1", "dest": "h2:7000", "dest_host": "h2", "job": "j1",
           "compress": "lz4", "channels": 4, "transport": "tcp", "max_downtime_ms": 300,
           "bandwidth": 0, "auto_converge": True, "timeout_s": 30.5, "on_timeout": "force",
           "data_ports": "7100-7199", "peer": peer}
write("control", {
    "start": b"\x00" + line(start),
    "start-bad-content": b"\x00" + line(dict(start, content="purple")),
    "start-bad-name": b"\x00" + line(dict(start, name="a/b")),
    "start-long-name": b"\x00" + line(dict(start, name="n" * 64)),
    "migrate-fd": b"\x01" + line(migrate),
    "migrate-odd-peer": b"\x01" + line(dict(migrate, peer=dict(peer, key="0g" * 20,
                                                                data_port_lo=-1,
                                                                io_timeout_ms=1e30))),
    "migrate-peer-string": b"\x01" + line(dict(migrate, peer="insecure", data_ports="80")),
    "two-lines-fds": b"\x05" + line({"cmd": "info", "name": "g1"}) + line({"cmd": "list"}),
    "refuse-fds": b"\x11" + line({"cmd": "restore", "name": "g2", "file": "/var/g2.ckpt",
                                  "lazy": True, "key_file": "/etc/k"}),
    "fd-on-unfinished-line": b"\x04" + line({"cmd": "snapshot", "name": "g1", "file": "/tmp/s",
                                             "incremental": True, "live": True}) +
        b"{\"cmd\":\"info\"",
    "not-object": b"\x00[\"start\"]\n",
    "no-newline": b"\x00" + line(start)[:-1],
    "nested": b"\x00" + b"{\"a\":" * 40 + b"1" + b"}" * 40 + b"\n",
})

# etcd 3.4's replies as its JSON gateway sends them (captured with curl
# from a cluster of tests/integration/lib/etcd.sh): int64s as strings,
# keys and values in base64, false and zero fields left out, streaming
# calls' messages in {"result":...} and ending in a newline. A seed is a
# script of fuzz_etcd_reply.c: a line of calls, then "@STATUS [CHUNK
# [CURLCODE]]" and the body of each reply.
OWNER_KEY = base64.b64encode(b"vmigrate/owner/g").decode()
LAST_KEY = base64.b64encode(b"vmigrate/last/g").decode()
HOST_A = base64.b64encode(b"hostA").decode()
LEASE = "2416922484861483013"
OTHER_LEASE = "2416922484861483099"


def etcd(obj):
    return json.dumps(obj, separators=(",", ":"))


def hdr(rev):
    return {"cluster_id": "8432479804450765772", "member_id": "936510201355149706",
            "revision": str(rev), "raft_term": "2"}


def kv(key, create, mod, value=HOST_A, lease=None):
    o = {"key": key, "create_revision": str(create), "mod_revision": str(mod),
         "version": str(mod - create + 1), "value": value}
    if lease:
        o["lease"] = lease
    return o


def rng(rev, *kvs):
    o = {"header": hdr(rev)}
    if kvs:
        o.update(kvs=list(kvs), count=str(len(kvs)))
    return o


def txn_won(rev, puts=2):
    return etcd({"header": hdr(rev), "succeeded": True,
                 "responses": [{"response_put": {"header": {"revision": str(rev)}}}] * puts})


def txn_lost(rev, *ranges):
    r = []
    for kvs in ranges:
        o = {"header": {"revision": str(rev)}}
        if kvs:
            o.update(kvs=list(kvs), count=str(len(kvs)))
        r.append({"response_range": o})
    return etcd({"header": hdr(rev), "responses": r})


def stream(*msgs):
    return "".join(etcd({"result": m}) + "\n" for m in msgs)


def err(code, msg):
    return etcd({"error": msg, "message": msg, "code": code})


def script(calls, *replies):
    return (calls + "\n" + "\n".join("@%s\n%s" % r for r in replies)).encode()


GRANT = ("200", etcd({"header": hdr(1), "ID": LEASE, "TTL": "5"}))
WON = ("200", txn_won(2))
REVOKED = ("200", etcd({"header": hdr(4)}))
KEEPALIVE = ("200", stream({"header": hdr(3), "ID": LEASE, "TTL": "5"}))
NO_LEADER = ("503", etcd({"error": {"grpc_code": 14, "http_code": 503,
                                    "message": "etcdserver: no leader",
                                    "http_status": "Service Unavailable"}}))
TIMED_OUT = ("503", err(14, "etcdserver: request timed out"))
CREATED = {"header": hdr(5), "created": True}
# members as /v3/maintenance/status describes them (ids are uint64s)
M1, M2 = "14988587262173862809", "6602041157999900274"


def status(me, leader, term=2, index=11, **more):
    o = {"header": dict(hdr(1), member_id=me, raft_term=str(term)), "version": "3.4.23",
         "dbSize": "20480", "leader": leader, "raftIndex": str(index), "raftTerm": str(term),
         "raftAppliedIndex": str(index), "dbSizeInUse": "16384"}
    o.update(more)
    return ("200", etcd(o))


MOVED = ("200", "{}")   # transfer-leadership, once the target leads
NOT_LEADER = ("412", err(9, "etcdserver: not leader"))
write("etcd_reply", {
    "acquire": script("a", GRANT, WON),
    "acquire-busy": script("a", GRANT, ("200", txn_lost(5, [kv(OWNER_KEY, 3, 5, "aG9zdEI=",
                                                                 OTHER_LEASE)])), REVOKED),
    "acquire-retried": script("a", ("0 0 28", ""), GRANT, ("0 0 28", ""),
                              ("200", txn_lost(2, [kv(OWNER_KEY, 2, 2, lease=LEASE)]))),
    "acquire-no-leader": script("a", ("500", err(2, "context deadline exceeded")),
                                ("500", err(2, "context deadline exceeded"))),
    "take-over": script("t2", GRANT, ("200", txn_won(4))),
    "take-over-stale": script("t2", GRANT, ("200", txn_lost(4, [], [kv(
        LAST_KEY, 2, 3, base64.b64encode(b"stale: token 2 went on without its standby")
        .decode())])), REVOKED),
    "take-over-no-record": script("t2", GRANT, ("200", txn_lost(4, [], [])), REVOKED),
    "keepalive": script("akk", GRANT, WON, KEEPALIVE,
                        ("200", stream({"header": hdr(3), "ID": LEASE}))),
    "keepalive-no-leader": script("ak", GRANT, WON, NO_LEADER, NO_LEADER),
    "keepalive-lease-not-found": script("akka", GRANT, WON, (
        "404", err(5, "etcdserver: requested lease not found")), GRANT, WON),
    "reissue": script("aio", GRANT, WON, ("200", txn_won(3)),
                      ("200", etcd(rng(3, kv(OWNER_KEY, 2, 3, lease=LEASE))))),
    "reissue-other-lease": script("ai", GRANT, WON, ("200", txn_lost(
        6, [kv(OWNER_KEY, 6, 6, "aG9zdEI=", OTHER_LEASE)]))),
    "reissue-gone": script("ai", GRANT, WON, ("200", txn_lost(3, []))),
    "reissue-lease-not-found": script("ai", GRANT, WON,
                                      ("404", err(5, "etcdserver: requested lease not found"))),
    "stale-then-reissue": script("asi", GRANT, WON, ("200", txn_won(3, 1)), ("200", txn_won(4))),
    "mark-stale-refused": script("as", GRANT, WON, ("200", txn_lost(
        5, [kv(OWNER_KEY, 5, 5, "aG9zdEI=", OTHER_LEASE)]))),
    "mark-stale-duplicate-key": script("as", GRANT, WON, (
        "400", err(3, "etcdserver: duplicate key given in txn request"))),
    "revoke": script("ark", GRANT, WON, REVOKED),
    "revoke-not-found": script("ar", GRANT, WON,
                               ("404", err(5, "etcdserver: requested lease not found"))),
    "owner": script("o", ("200", etcd(rng(3, kv(OWNER_KEY, 2, 3, lease=LEASE))))),
    "owner-none": script("o", ("200", etcd(rng(3)))),
    "owner-no-quorum": script("o", TIMED_OUT, TIMED_OUT),
    "owner-bad-request": script("o", ("400", err(3, "unexpected EOF"))),
    "owner-web-server": script("o", ("404", "<html><body><h1>404 Not Found</h1></body></html>")),
    "watch-delete": script("w6", ("200 7", stream(CREATED, {"header": hdr(7), "events": [
        {"type": "DELETE", "kv": {"key": OWNER_KEY, "mod_revision": "7"}}]}))),
    "watch-put-delete": script("w7", ("200 50", stream(CREATED, {"header": hdr(8), "events": [
        {"kv": kv(OWNER_KEY, 8, 8)}]}, {"header": hdr(9), "events": [
            {"type": "DELETE", "kv": {"key": OWNER_KEY, "mod_revision": "9"}}]}))),
    "watch-compacted": script("w2", ("200", stream(CREATED, {
        "header": {k: v for k, v in hdr(9).items() if k != "revision"}, "canceled": True,
        "compact_revision": "6"}))),
    "watch-quiet": script("w9", ("200 0 28", stream(CREATED))),
    "watch-refused": script("w", ("400", err(2, "invalid character 'x' looking for "
                                                "beginning of value"))),
    "leader-here": script("l", status(M1, M1), status(M2, M1), MOVED),
    "leader-second-here": script("l2", status(M1, M2), status(M2, M2), MOVED),
    "leader-elsewhere": script("l", status(M1, M2), status(M2, M2)),
    "leader-all-here": script("l3", status(M1, M1), status(M2, M1)),
    "leader-none-here": script("l0", status(M1, M1), status(M2, M1)),
    "leader-learner": script("l", status(M1, M1), status(M2, M1, isLearner=True)),
    "leader-two-terms": script("l", status(M1, M1, term=2), status(M2, M2, term=3)),
    "leader-between-leaders": script("l", status(M1, "0"), status(M2, "0")),
    "leader-not-leader": script("l", status(M1, M1), status(M2, M1), NOT_LEADER),
    "leader-bad-transferee": script("l", status(M1, M1), status(M2, M1), (
        "412", err(9, "etcdserver: bad leader transferee"))),
    "leader-transfer-timed-out": script("l", status(M1, M1), status(M2, M1), ("0 0 28", "")),
    "leader-other-unreachable": script("l", status(M1, M1), ("0 0 7", "")),
    "leader-unreachable": script("l", ("0 0 7", ""), ("0 0 28", "")),
    "leader-in-session": script("aklk", GRANT, WON, KEEPALIVE, status(M1, M1),
                                status(M2, M1, index=12), MOVED, KEEPALIVE),
    "session": script("akiokso r", GRANT, WON, KEEPALIVE, ("200", txn_won(3)),
                      ("200", etcd(rng(3, kv(OWNER_KEY, 2, 3, lease=LEASE)))), KEEPALIVE,
                      ("200", txn_won(4, 1)), ("200", etcd(rng(4, kv(OWNER_KEY, 2, 3,
                                                                     lease=LEASE)))),
                      REVOKED),
})


# QEMU 7.2 migration streams (vm/libvirt/QEMU-STREAM.md), big-endian. A
# seed's first byte picks the stream (bit 0: the return path) and the chunk
# size (bits 1-3, fuzz_qemu_stream.c).
def q_cmd(cmd, payload=b""):
    return struct.pack(">BHH", 0x08, cmd, len(payload)) + payload


def q_name(s):
    return bytes([len(s)]) + s


def q_header(machine=b"pc-i440fx-7.2", uuid=None):
    h = struct.pack(">II", 0x5145564d, 3)
    if machine is not None:
        h += b"\x07" + struct.pack(">I", len(machine)) + machine
        if uuid is not None:
            h += b"\x05" + q_name(b"configuration/uuid") + struct.pack(">I", 1) + uuid
    return h


def q_eos(sid=2):
    return struct.pack(">QBI", 0x10, 0x7e, sid)


Q_BLOCKS = [(b"pc.ram", 16 * 4096), (b"pc.bios", 2 * 4096)]


def q_setup(sid=2, blocks=Q_BLOCKS):
    s = b"\x01" + struct.pack(">I", sid) + q_name(b"ram") + struct.pack(">II", 0, 4)
    s += struct.pack(">Q", sum(n for _, n in blocks) | 0x04)
    for name, n in blocks:
        s += q_name(name) + struct.pack(">Q", n)
    return s + q_eos(sid)


def q_page(name, off, data):
    flags = 0x08 if name else 0x08 | 0x20
    return struct.pack(">Q", off | flags) + (q_name(name) if name else b"") + data


def q_zero(name, off, fill=0):
    flags = 0x02 if name else 0x02 | 0x20
    return struct.pack(">Q", off | flags) + (q_name(name) if name else b"") + bytes([fill])


Q_DEVICE = (b"\x04" + struct.pack(">I", 3) + q_name(b"timer") + struct.pack(">II", 0, 2) +
            bytes(range(8)) + struct.pack(">BI", 0x7e, 3) + b"\x00\x06" +
            struct.pack(">I", 2) + b"{}")
Q_PAGE = bytes((i * 7) & 0xff for i in range(4096))
Q_PART = (b"\x02" + struct.pack(">I", 2) + q_zero(b"pc.ram", 0) + q_page(None, 4096, Q_PAGE) +
          q_zero(b"pc.bios", 4096, 0x5a) + q_page(b"pc.ram", 15 * 4096, Q_PAGE) + q_eos())
Q_END = b"\x03" + struct.pack(">I", 2) + q_zero(None, 8192) + q_eos()


def q_stream(head=None, part=Q_PART):
    return (head if head is not None else q_header()) + q_setup() + part + Q_END + Q_DEVICE


def q_part_with(item):
    return b"\x02" + struct.pack(">I", 2) + q_zero(b"pc.ram", 0) + item + q_eos()


Q_RP = (struct.pack(">HHI", 2, 4, 1) + struct.pack(">HHI", 6, 4, 9) +
        struct.pack(">HHI", 1, 4, 0))
write("qemu_stream", {
    "precopy": b"\x00" + q_stream(),
    "precopy-bytewise": b"\x02" + q_stream(),
    "precopy-chunks-4095": b"\x0c" + q_stream(),
    "return-path": b"\x08" + q_stream(q_header() + q_cmd(1) + q_cmd(2, struct.pack(">I", 1))),
    "uuid": b"\x00" + q_stream(q_header(b"pc-q35-7.2", bytes(range(16)))),
    "no-configuration": b"\x00" + q_stream(q_header(None)),
    "xbzrle": b"\x00" + q_stream(part=q_part_with(struct.pack(">Q", 0x1000 | 0x40 | 0x20))),
    "compress": b"\x00" + q_stream(part=q_part_with(struct.pack(">Q", 0x1000 | 0x100 | 0x20))),
    "multifd-flush": b"\x00" + q_stream(part=q_part_with(struct.pack(">Q", 0x200))),
    "unknown-flag": b"\x00" + q_stream(part=q_part_with(struct.pack(">Q", 0x400 | 0x08))),
    "page-beyond": b"\x00" + q_stream(part=q_part_with(q_page(None, 16 * 4096, Q_PAGE))),
    "unknown-block": b"\x00" + q_stream(part=q_part_with(q_page(b"pc.rom", 0, Q_PAGE))),
    "second-mem-size": b"\x00" + q_stream(part=q_part_with(struct.pack(">Q", 0x1000 | 0x04))),
    "bad-footer": b"\x00" + q_stream(part=Q_PART[:-4] + struct.pack(">I", 9)),
    "postcopy-advise": b"\x00" + q_header() + q_cmd(3, bytes(16)),
    "colo": b"\x00" + q_header() + q_cmd(8),
    "block": b"\x00" + q_header() + b"\x01" + struct.pack(">I", 3) + q_name(b"block") +
        struct.pack(">II", 0, 1),
    "ignore-shared": b"\x00" + q_header() + b"\x05" + q_name(b"configuration/capabilities") +
        struct.pack(">II", 1, 1) + q_name(b"x-ignore-shared"),
    "multifd-channel": b"\x00" + struct.pack(">II", 0x11223344, 1) + bytes(64),
    "truncated": b"\x00" + q_stream()[:200],
    "rp-pong-resume-shut": b"\x01" + Q_RP,
    "rp-bytewise": b"\x03" + Q_RP,
    "rp-req-pages": b"\x01" + struct.pack(">HHQI", 4, 12, 0, 4096),
    "rp-bad-length": b"\x01" + struct.pack(">HH", 2, 8) + bytes(8),
    "rp-after-shut": b"\x01" + struct.pack(">HHI", 1, 4, 0) + struct.pack(">HHI", 2, 4, 1),
})
