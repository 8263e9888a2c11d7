#!/usr/bin/env python3
"""A datagram socket that stands in for systemd in tests: NOTIFY_SOCKET
(sd_notify) or the journal's native socket (sd_journal_send).

  dgram_sink.py SOCKET OUT [--journal] [--ready-check CONTROL_SOCKET HOST:PORT]
                [--seconds N]

Binds an AF_UNIX datagram socket at SOCKET and appends what arrives to OUT,
one field a line ("KEY=value"), a blank line after each datagram. With
--journal, datagrams are parsed as the journal's native protocol (a field
is KEY=value, or KEY, a newline, a little-endian 64-bit length and the
value). With --ready-check, on READY=1 it also notes whether the control
socket exists and the peer port accepts a connection at that moment:
"ready-check control=1 peer=1". Writes "listening" to OUT once bound, and
stops by itself after --seconds (default 120).
"""
import os
import socket
import struct
import sys
import time


def journal_fields(data):
    fields = []
    i = 0
    while i < len(data):
        nl = data.find(b"\n", i)
        if nl < 0:
            break
        line = data[i:nl]
        if b"=" in line:
            fields.append(line.decode("utf-8", "replace"))
            i = nl + 1
        else:
            size = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
            value = data[nl + 9:nl + 9 + size]
            fields.append(line.decode() + "=" + value.decode("utf-8", "replace"))
            i = nl + 9 + size + 1
    return fields


def peer_accepts(hostport):
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def main():
    args = sys.argv[1:]
    path, out = args[0], args[1]
    journal = "--journal" in args
    check = None
    seconds = 120.0
    if "--ready-check" in args:
        i = args.index("--ready-check")
        check = (args[i + 1], args[i + 2])
    if "--seconds" in args:
        seconds = float(args[args.index("--seconds") + 1])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.5)
    end = time.monotonic() + seconds
    with open(out, "a", buffering=1) as f:
        f.write("listening\n\n")
        while time.monotonic() < end:
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                continue
            fields = journal_fields(data) if journal else \
                data.decode("utf-8", "replace").split("\n")
            lines = [x for x in fields if x]
            if check and "READY=1" in lines:
                lines.append("ready-check control=%d peer=%d" % (
                    os.path.exists(check[0]), peer_accepts(check[1])))
            f.write("\n".join(lines) + "\n\n")
    s.close()


if __name__ == "__main__":
    main()
