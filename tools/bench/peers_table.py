#!/usr/bin/env python3
"""The records and the table of tools/bench/peers.sh (standard library only).

  peers_table.py record RAW.json --program P --format F --kernel K --threads T --round R
      One JSON line from one bench run's raw output: `bitnet-run bench --json` (one object per line,
      "test": "pp128", "tokens_per_second") or llama-bench `-o json` (an array of objects with
      n_prompt, n_gen, avg_ts; the field names of llama.cpp, bitnet.cpp's fork and ik_llama.cpp).
  peers_table.py table RESULTS.jsonl META.txt
      One markdown table: per program, format and threads, the median over rounds of each test's
      mean t/s, with the min-max over rounds; then META.txt (key=value lines: cpu, flags, commits).
"""

import argparse
import json
import statistics
import sys


def tests_of(text):
    """{"pp128": t/s, "tg64": t/s, ...} and the kernel bitnet-run reports, from one run's output."""
    text = text.strip()
    tests, kernel = {}, None
    if text.startswith("["):  # llama-bench -o json
        for row in json.loads(text):
            n_prompt, n_gen = row["n_prompt"], row["n_gen"]
            if n_prompt and n_gen:
                continue
            name = f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"
            tests[name] = row["avg_ts"]
    else:  # bitnet-run bench --json
        for line in text.splitlines():
            row = json.loads(line)
            tests[row["test"]] = row["tokens_per_second"]
            kernel = row.get("kernel", kernel)
    if not tests:
        raise SystemExit("no results in the bench output")
    return tests, kernel


def record(args):
    with open(args.raw) as f:
        tests, reported = tests_of(f.read())
    kernel = args.kernel or None
    if kernel == "auto" and reported:
        kernel = f"auto ({reported})"
    row = {
        "program": args.program,
        "format": args.format,
        "kernel": kernel,
        "threads": args.threads,
        "round": args.round,
        "tests": tests,
    }
    # The first prompt and generation tests also as top-level pp/tg (t/s).
    for prefix in ("pp", "tg"):
        for name, tps in tests.items():
            if name.startswith(prefix):
                row[prefix] = tps
                row[f"{prefix}_test"] = name
                break
    print(json.dumps(row))


def cell(values):
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}"
    return f"{med:.2f} ({min(values):.2f}–{max(values):.2f})"


def table(args):
    rows = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    meta = {}
    with open(args.meta) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    tests = []
    for r in rows:
        for name in r["tests"]:
            if name not in tests:
                tests.append(name)
    tests.sort(key=lambda t: (not t.startswith("pp"), t))
    groups = {}
    for r in rows:  # first-seen order: the order of the runs within a round
        label = r["format"] + (f", kernel {r['kernel']}" if r.get("kernel") else "")
        groups.setdefault((r["threads"], r["program"], label), []).append(r)
    rounds = len({r["round"] for r in rows})
    out = sys.stdout
    out.write("| program | format | threads | " + " | ".join(f"{t} t/s" for t in tests) + " |\n")
    out.write("|---|---|---|" + "---|" * len(tests) + "\n")
    for (threads, program, label), rs in sorted(groups.items(), key=lambda g: g[0][0]):
        name = f"**{program}**" if program == "bitnet-run" else program
        cells = [cell([r["tests"][t] for r in rs if t in r["tests"]]) for t in tests]
        out.write(f"| {name} | {label} | {threads} | " + " | ".join(cells) + " |\n")
    out.write(
        f"\nMedian over {rounds} round(s) (min–max); each run is its bench program's mean of its "
        "repetitions.\n\n"
    )
    for key, title in (
        ("cpu", "CPU"),
        ("flags", "SIMD flags"),
        ("bitnet-run", "bitnet-run"),
        ("bitnet.cpp", "bitnet.cpp"),
        ("llama.cpp", "llama.cpp"),
        ("ik_llama.cpp", "ik_llama.cpp"),
        ("settings", "settings"),
    ):
        if key in meta:
            out.write(f"- {title}: {meta[key].strip()}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("raw")
    r.add_argument("--program", required=True)
    r.add_argument("--format", required=True)
    r.add_argument("--kernel", default="")
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--round", type=int, required=True)
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("meta")
    args = p.parse_args()
    record(args) if args.command == "record" else table(args)


if __name__ == "__main__":
    main()
