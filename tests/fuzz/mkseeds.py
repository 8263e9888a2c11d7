#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus-*/).

Run from anywhere: python3 tests/fuzz/mkseeds.py. The peer seeds carry
HMAC proofs computed from the key and the fixed nonces of fuzz_peer.h, so
the fuzzer starts from handshakes that succeed."""
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
