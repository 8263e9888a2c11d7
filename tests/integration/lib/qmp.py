#!/usr/bin/env python3
"""A small QMP client for the QEMU suites.

    qmp.py SOCKET [--wait-migration SECONDS] [COMMAND-JSON...]

Connects to QEMU's QMP unix socket (retrying while QEMU starts, up to
10 s), negotiates capabilities, runs each command and prints one JSON line:
the list of their replies' "return" values ({"error": ...} for a command
QEMU refused). With --wait-migration, it then polls query-migrate until the
status is completed, failed or cancelled, for at most SECONDS, and appends
that last query-migrate reply to the list. Exit status 0 when every command
answered and the wait (if any) ended in time, 1 otherwise."""
import json
import socket
import sys
import time


def connect(path):
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Qmp:
    def __init__(self, path):
        self.sock = connect(path)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())           # the greeting
        self.cmd({"execute": "qmp_capabilities"})

    def cmd(self, c):
        self.f.write(json.dumps(c) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("QEMU closed QMP")
            r = json.loads(line)
            if "event" in r:
                continue
            return r.get("return", {"error": r.get("error")})


def main():
    args = sys.argv[1:]
    wait = None
    if len(args) >= 3 and args[1] == "--wait-migration":
        wait = float(args[2])
        args = [args[0]] + args[3:]
    q = Qmp(args[0])
    out = [q.cmd(json.loads(a)) for a in args[1:]]
    ok = not any(isinstance(r, dict) and "error" in r and r["error"] for r in out)
    if wait is not None:
        deadline = time.monotonic() + wait
        while True:
            r = q.cmd({"execute": "query-migrate"})
            if r.get("status") in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                ok = False
                break
            time.sleep(0.1)
        out.append(r)
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
