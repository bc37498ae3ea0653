#!/usr/bin/env python3
"""Turns the standard output of a Criterion bench binary into a Markdown table.

A measured run (`cargo bench`) gives each benchmark's `time: [low estimate high]`; a run in
test mode (`cargo test --bench`, or `cargo bench -- --test`) gives `Testing NAME` then
`Success`. Exits 1 when the output holds neither.
"""

import re
import sys

TIME = re.compile(r"time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]")
KEYWORDS = ("time:", "thrpt:", "change:", "Found ", "Benchmarking ", "Gnuplot", "Running ")


def main():
    measured, tested = [], []
    name, testing = None, None
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        stripped = line.strip()
        match = TIME.search(line)
        if match:
            before = line[: match.start()].strip()
            measured.append((before or name or "?", *match.groups()))
            continue
        if stripped.startswith("Testing "):
            testing = stripped[len("Testing "):]
        elif stripped == "Success" and testing:
            tested.append(testing)
            testing = None
        elif stripped and not line[0].isspace() and not stripped.startswith(KEYWORDS):
            # A long name stands on its own line, its figures on the next.
            name = stripped
    if measured:
        print("| benchmark | low | estimate | high |")
        print("|---|---|---|---|")
        for row in measured:
            print("| " + " | ".join(row) + " |")
    elif tested:
        print("| benchmark | result |")
        print("|---|---|")
        for bench in tested:
            print(f"| {bench} | ran once (test mode) |")
    else:
        sys.exit(1)


if __name__ == "__main__":
    main()
