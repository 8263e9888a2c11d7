#!/usr/bin/env python3
"""Checks the output a replicated guest released on every host (one file per
host, lines "TIME token T epoch E: TEXT"), as the outside saw it:
  - on each host, times and tokens never go back;
  - no two tokens' release windows overlap on the shared clock (one host at
    a time released the guest's output), and later windows have larger tokens;
  - the guest's counter, in the "vcpu V pass, counter C" lines, never goes
    back across the whole story: a host that took over continues from at
    least the last counter the outside saw.
Prints one line saying why when a rule is broken, and exits 1."""
import re
import sys

LINE = re.compile(r"^(\d+\.\d+) token (\d+) epoch (\d+): (.*)$")
COUNTER = re.compile(r"pass, counter (\d+)")


def main(paths):
    events = []
    for path in paths:
        last_t, last_tok = 0.0, 0
        try:
            lines = open(path).read().splitlines()
        except FileNotFoundError:
            continue
        for n, line in enumerate(lines, 1):
            m = LINE.match(line)
            if not m:
                continue
            t, tok = float(m.group(1)), int(m.group(2))
            if t < last_t or tok < last_tok:
                print(f"{path}:{n}: time or token went back")
                return 1
            last_t, last_tok = t, tok
            c = COUNTER.search(m.group(4))
            events.append((t, tok, int(c.group(1)) if c else None, path, n))
    events.sort()
    windows = {}
    for t, tok, _, path, n in events:
        lo, hi, where = windows.get(tok, (t, t, path))
        if where != path:
            print(f"token {tok} released on two hosts ({where} and {path})")
            return 1
        windows[tok] = (min(lo, t), max(hi, t), path)
    order = sorted(windows.items(), key=lambda kv: kv[1][0])
    for (tok_a, (lo_a, hi_a, pa)), (tok_b, (lo_b, hi_b, pb)) in zip(order, order[1:]):
        if lo_b <= hi_a:
            print(f"token {tok_a} ({pa}) released until {hi_a:.6f}, token {tok_b} ({pb}) "
                  f"from {lo_b:.6f}: two hosts released output at once")
            return 1
        if tok_b <= tok_a:
            print(f"token {tok_b} released after token {tok_a}: tokens went back")
            return 1
    seen = 0
    for t, tok, c, path, n in events:
        if c is None:
            continue
        if c < seen:
            print(f"{path}:{n}: counter {c} after {seen} was seen: output the outside saw was lost")
            return 1
        seen = c
    print(f"{len(events)} lines, tokens {[k for k, _ in order]}: one host at a time, "
          f"counter never back (last {seen})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
