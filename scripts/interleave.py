#!/usr/bin/env python3
"""interleave.py: time commands in alternation and print a Markdown table.

hyperfine runs each command's runs in a row, so a slow stretch of a shared
machine lands on one command and shows as a large +/-. Here every round
runs each command once, in alternating order (forward, then backward), and
the table gives percentiles, which one slow stretch barely moves.

Usage: interleave.py [--rounds N] [--ref NAME] NAME COMMAND [NAME COMMAND]...
COMMAND is split on spaces and run without a shell, its output discarded;
a command that fails is reported and its time still counted. --ref names
the command the "vs" column divides by.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(p * len(sorted_ms)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ref", default="")
    ap.add_argument("commands", nargs="+", metavar="NAME COMMAND")
    a = ap.parse_args()
    if len(a.commands) % 2:
        sys.exit("interleave: want NAME COMMAND pairs")
    names, argvs = a.commands[0::2], [c.split() for c in a.commands[1::2]]
    for name, argv in zip(names, argvs):
        if not argv or not shutil.which(argv[0]):
            sys.exit(f"interleave: {name}: no such command {' '.join(argv)!r}")
    if a.ref and a.ref not in names:
        sys.exit(f"interleave: --ref {a.ref!r} is none of the commands")
    failed = [0] * len(argvs)

    def once(j):
        t = time.perf_counter()
        r = subprocess.run(argvs[j], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            failed[j] += 1
        return (time.perf_counter() - t) * 1000

    for j in range(len(argvs)):
        for _ in range(a.warmup):
            once(j)
    failed = [0] * len(argvs)
    ms = [[] for _ in argvs]
    for r in range(a.rounds):
        order = range(len(argvs)) if r % 2 == 0 else reversed(range(len(argvs)))
        for j in order:
            ms[j].append(once(j))
    ref = statistics.median(ms[names.index(a.ref)]) if a.ref else None
    print("| Command | median [ms] | p25 | p75 | p90 |" + (" vs " + a.ref + " |" if ref else ""))
    print("|:---|---:|---:|---:|---:|" + ("---:|" if ref else ""))
    for name, v in zip(names, ms):
        v = sorted(v)
        med = statistics.median(v)
        row = f"| `{name}` | {med:.1f} | {percentile(v, .25):.1f} | {percentile(v, .75):.1f} | {percentile(v, .9):.1f} |"
        if ref:
            row += f" {med / ref:.2f} |"
        print(row)
    for name, n in zip(names, failed):
        if n:
            print(f"- {name}: {n} of {a.rounds} runs failed")


if __name__ == "__main__":
    main()
