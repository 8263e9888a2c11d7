#!/usr/bin/env python3
"""Peak memory of the processes of a migration that is NOT guest RAM.

Guest RAM is shared memory (RssShmem in /proc/PID/status); what the services and
guest processes hold besides it (RssAnon + RssFile: heap, buffers, bitmaps,
the binary) is what must stay bounded as guests grow. Samples every
--interval seconds until --stop-file appears, then prints one JSON object:
per role, the peak of RssAnon+RssFile and of RssShmem, in KiB.

Roles are given as ROLE=PID; a role ending in "+children" also takes the
processes its PID forks while it runs (a destination service's incoming
guest process), under the role name without the suffix plus "_child".
"""
import argparse
import json
import os
import time


def status_kib(pid):
    """RssAnon+RssFile and RssShmem of pid in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None

    def kib(name):
        return int(fields.get(name, "0 kB").split()[0])
    return kib("RssAnon") + kib("RssFile"), kib("RssShmem")


def children(pid):
    """Direct children of pid (all its threads)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("roles", nargs="+", help="ROLE=PID or ROLE+children=PID")
    args = ap.parse_args()
    roles = []
    for r in args.roles:
        name, pid = r.split("=")
        roles.append((name.replace("+children", ""), int(pid), name.endswith("+children")))
    peak = {}

    def note(role, pid):
        s = status_kib(pid)
        if s is None:
            return
        other, shmem = peak.get(role, (0, 0))
        peak[role] = (max(other, s[0]), max(shmem, s[1]))

    samples = 0
    while True:
        for name, pid, kids in roles:
            note(name, pid)
            if kids:
                for c in children(pid):
                    note(name + "_child", c)
        samples += 1
        if os.path.exists(args.stop_file):
            break
        time.sleep(args.interval)
    out = {"samples": samples}
    for role, (other, shmem) in sorted(peak.items()):
        out[role + "_kib"] = other
        out[role + "_shmem_kib"] = shmem
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
