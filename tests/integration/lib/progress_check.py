#!/usr/bin/env python3
"""Checks on the progress lines `vmigrate migrate` drew on a terminal,
from a pty_run.py log of a migration that completed:

    progress_check.py LOG

Prints one line per check, "CASE 0" when it holds or "CASE 1 why" when it
does not, for the suite to count, and "#" lines with what it saw.
"""
import re
import sys

LINE = re.compile(r"^(?P<status>[a-z]+)\s+round (?P<round>\d+)\s+(?P<pct>[\d.]+)%\s+"
                  r"(?P<rate>[\d.]+) MiB/s\s+dirty\s+(?P<dirty>[\d.]+) MiB/s\s+"
                  r"(?P<left>[\d.]+) MiB left\s+expected downtime\s+(?P<down>\d+) ms\s+"
                  r"ETA\s+(?P<eta>\?|[\d.]+ s)$")


def result(case, ok, why=""):
    print("%s %d%s" % (case, 0 if ok else 1, "" if ok else " " + why))


def main():
    lines = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for raw in f:
            t, _, text = raw.rstrip("\n").partition("\t")
            m = LINE.match(text)
            if m:
                d = m.groupdict()
                lines.append({
                    "text": text,
                    "t": float(t), "status": d["status"], "round": int(d["round"]),
                    "pct": float(d["pct"]), "rate": float(d["rate"]),
                    "dirty": float(d["dirty"]), "left": float(d["left"]),
                    "eta": None if d["eta"] == "?" else float(d["eta"].split()[0]),
                })
    print("# %d progress lines" % len(lines))
    for e in lines[::max(1, len(lines) // 12)]:
        print("#   %6.2f s  %s" % (e["t"], e["text"]))
    if not lines or lines[-1]["status"] != "completed":
        result("progress_lines", False, "no progress line ends the migration as completed")
        return
    t_end = lines[-1]["t"]
    round1 = [e for e in lines if e["status"] == "active" and e["round"] == 1]
    if len(round1) < 5:
        result("progress_lines", False, "only %d lines in round 1" % len(round1))
        return
    result("progress_lines", True)

    # the rate is live from round 1's first second on
    start = round1[0]["t"]
    later = [e for e in round1 if e["t"] - start >= 1.0]
    zero = [e for e in later if e["rate"] <= 0]
    result("rate_in_round_1", len(later) >= 3 and not zero,
           "%d of %d lines after round 1's first second show no rate" % (len(zero), len(later)))
    result("dirty_rate_seen", any(e["dirty"] > 0 for e in lines if e["status"] == "active"),
           "the dirty rate of a dirtying guest stayed 0")

    # the share done only grows, and is under 100 until the switchover
    back = [(a["pct"], b["pct"]) for a, b in zip(lines, lines[1:]) if b["pct"] < a["pct"]]
    result("percent_never_decreases", not back, "went back: %s" % back[:3])
    early = [e for e in lines if e["status"] != "completed" and e["pct"] >= 100]
    result("percent_below_100_until_done", not early and lines[-1]["pct"] == 100,
           "%d lines at 100%% before completion, last %.1f%%" % (len(early), lines[-1]["pct"]))

    # the ETA counts down, and is of the order of the time it really took
    known = [e for e in later if e["eta"] is not None]
    pre = [e for e in lines if e["status"] == "active" and e["eta"] is not None]
    if not known or not pre:
        result("eta_counts_down", False, "no ETA shown after round 1's first second")
        return
    first, last = known[0], pre[-1]
    result("eta_counts_down", last["eta"] < first["eta"],
           "ETA %.1f s at %.1f s, %.1f s at %.1f s" % (first["eta"], first["t"], last["eta"],
                                                       last["t"]))
    # and it is the time really left, from round 1 on: each line's ETA
    # against what the job then took (its end is the completed line), not
    # short by the batches in flight nor by a rate read in jumps
    ratios = [(e["t"], e["eta"], t_end - e["t"]) for e in known if t_end - e["t"] > 0.5]
    print("# ETA / time really left, round 1 after its first second: %s" %
          " ".join("%.2f" % (eta / real) for _, eta, real in ratios))
    off = [(t, eta, real) for t, eta, real in ratios if not 0.7 <= eta / real <= 1.4]
    mid = sorted(eta / real for _, eta, real in ratios)[len(ratios) // 2] if ratios else 0
    result("eta_is_the_remaining_time", bool(ratios) and not off and 0.8 <= mid <= 1.25,
           "%d lines; median ETA/left %.2f; outside 0.7-1.4 times the time left: %s" % (
               len(ratios), mid, ", ".join("ETA %.1f s at %.1f s, %.1f s left" % o
                                           for o in off[:3])))
    result("remaining_data_shrinks", round1[-1]["left"] < round1[0]["left"],
           "%.1f MiB left at the start of round 1, %.1f MiB at its end" %
           (round1[0]["left"], round1[-1]["left"]))


if __name__ == "__main__":
    main()
