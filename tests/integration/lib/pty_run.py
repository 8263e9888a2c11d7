#!/usr/bin/env python3
"""Run a command on a pseudo-terminal, as at a person's terminal, and log
what it writes: one line per line or carriage-return update, each with the
seconds since the start ("12.345<TAB>text").

    pty_run.py LOG [--interrupt-when REGEX] [--timeout S] -- CMD [ARG...]

--interrupt-when: once a line matches REGEX, type Ctrl-C, so the terminal
sends SIGINT to the command (logged as "<Ctrl-C>"). Exit status: the
command's, 128+N when a signal N ended it, 124 when it ran past the
timeout (then it is killed).
"""
import os
import pty
import re
import select
import signal
import sys
import time


def main():
    args = sys.argv[1:]
    if "--" not in args or not args or args[0].startswith("-"):
        sys.exit(__doc__)
    log, opts, cmd = args[0], args[1:args.index("--")], args[args.index("--") + 1:]
    interrupt, timeout = None, 300.0
    while opts:
        if opts[0] == "--interrupt-when" and len(opts) > 1:
            interrupt = re.compile(opts[1])
        elif opts[0] == "--timeout" and len(opts) > 1:
            timeout = float(opts[1])
        else:
            sys.exit(__doc__)
        opts = opts[2:]
    if not cmd:
        sys.exit(__doc__)

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    t0 = time.monotonic()
    pending = b""
    interrupted = False
    with open(log, "w", encoding="utf-8") as out:
        def emit(raw):
            nonlocal interrupted
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                return
            out.write("%.3f\t%s\n" % (time.monotonic() - t0, text))
            if interrupt and not interrupted and interrupt.search(text):
                os.write(fd, b"\x03")
                interrupted = True
                out.write("%.3f\t<Ctrl-C>\n" % (time.monotonic() - t0))
            out.flush()

        while True:
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                out.write("%.3f\t<timeout>\n" % (time.monotonic() - t0))
                return 124
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""      # EIO: the command closed the terminal
            if not data:
                break
            parts = re.split(rb"[\r\n]", pending + data)
            pending = parts.pop()
            for part in parts:
                emit(part)
        emit(pending)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
