#!/usr/bin/env python3
"""Checks one command's stdout against the JSON envelope of vmigrate(1),
JSON OUTPUT: exactly one JSON object, with "ok"; when "ok" is false also a
non-empty "error" and a "code" of the documented set.

    envelope.py codes MAN_PAGE              the codes the man page lists
    envelope.py check MAN_PAGE OK [CODE]    stdout on stdin; OK: true|false

"check" prints nothing when it holds, else why (and exits 1).
"""
import json
import re
import sys


def man_codes(path):
    """The words of the definition list under "# JSON OUTPUT"."""
    codes, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# "):
                inside = line.strip() == "# JSON OUTPUT"
                continue
            m = re.match(r"^\*([a-z][a-z-]*)\*$", line.strip())
            if inside and m:
                codes.append(m.group(1))
    return codes


def check(man, want_ok, want_code, text):
    codes = man_codes(man)
    if not codes:
        return "no codes under JSON OUTPUT in %s" % man
    try:
        o = json.loads(text)
    except ValueError as e:
        return "stdout is not one JSON object (%s): %r" % (e, text[:300])
    if not isinstance(o, dict):
        return "stdout is JSON but no object: %r" % text[:300]
    if not isinstance(o.get("ok"), bool):
        return "no boolean ok: %r" % text[:300]
    if o["ok"] != want_ok:
        return "ok is %s, not %s: %r" % (o["ok"], want_ok, text[:300])
    if o["ok"]:
        return None
    if not isinstance(o.get("error"), str) or not o["error"]:
        return "a failure without its error text: %r" % text[:300]
    if o.get("code") not in codes:
        return "code %r is not one of vmigrate(1)'s: %r" % (o.get("code"), text[:300])
    if want_code and o["code"] != want_code:
        return "code %r, not %r (%s)" % (o["code"], want_code, o["error"])
    return None


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "codes":
        print("\n".join(man_codes(sys.argv[2])))
        return 0
    if len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        why = check(sys.argv[2], sys.argv[3] == "true",
                    sys.argv[4] if len(sys.argv) == 5 else None, sys.stdin.read())
        if why:
            print(why)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
