#!/usr/bin/env python3
"""Plot one run of tools/bench/serve_load.sh (bitnet-loadgen JSON lines) as an SVG: aggregate
generated tokens/s and p99 inter-token latency against the number of concurrent streams, one line
per program through the mean of its rounds, each round's value a dot. Standard library only.

Usage: plot_serve.py RESULTS.jsonl OUT.svg [RUN]   (RUN: the `run` tag to draw; default the last)
"""
import json
import math
import pathlib
import sys

COLOURS = {"bitnet-serve": "#1f5f9f", "llama-server": "#d0712c"}
PANELS = [("tokens_per_s", "aggregate generated tokens/s"), ("itl_p99_ms", "p99 inter-token latency (ms)")]


def load(path, run):
    rows = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "run" in r.get("tags", {})]
    if not rows:
        sys.exit(f"{path}: no rows tagged with a run")
    run = run or rows[-1]["tags"]["run"]
    rows = [r for r in rows if r["tags"]["run"] == run]
    if not rows:
        sys.exit(f"{path}: no rows of run {run}")
    return run, rows


def panel(svg, rows, key, title, x0, width, height, levels):
    left, bottom, top = x0 + 60, 50, 40
    right = x0 + width - 20
    values = [r[key] for r in rows if r[key] is not None]
    if not values:
        sys.exit(f"no {key} to plot (every request failed, or one token each)")
    peak = max(values) * 1.15
    step = 10 ** math.floor(math.log10(peak / 5))
    step *= next(m for m in (1, 2, 5, 10) if peak / (step * m) <= 6)
    scale = (height - bottom - top) / peak
    xs = {c: left + (right - left) * (i + 0.5) / len(levels) for i, c in enumerate(levels)}
    y = lambda v: height - bottom - v * scale  # noqa: E731
    svg.append(f'<text x="{(left + right) / 2}" y="24" text-anchor="middle" font-size="13">{title}</text>')
    tick = 0.0
    while tick <= peak:
        svg.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{right}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    svg.append(f'<line x1="{left}" y1="{height - bottom}" x2="{right}" y2="{height - bottom}" stroke="black"/>')
    for c, x in xs.items():
        svg.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{c}</text>')
    svg.append(f'<text x="{(left + right) / 2}" y="{height - bottom + 34}" text-anchor="middle">concurrent streams (C)</text>')
    for program in sorted({r["tags"]["program"] for r in rows}):
        colour = COLOURS.get(program, "#444")
        mine = [r for r in rows if r["tags"]["program"] == program and r[key] is not None]
        means = []
        for c in levels:
            at = [r[key] for r in mine if r["concurrency"] == c]
            for v in at:
                svg.append(f'<circle cx="{xs[c]:.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}" opacity="0.6"/>')
            if at:
                means.append((xs[c], y(sum(at) / len(at)), sum(at) / len(at)))
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in means)
        svg.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, v in means:
            svg.append(f'<text x="{px:.1f}" y="{py - 6:.1f}" text-anchor="middle" font-size="9" fill="{colour}">{v:.1f}</text>')


def main(path, out, run=None):
    run, rows = load(path, run)
    levels = sorted({r["concurrency"] for r in rows})
    width, height = 960, 420
    first = rows[0]
    rounds = len({r["tags"].get("round") for r in rows})
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height + 40}" fill="white"/>']
    for i, (key, title) in enumerate(PANELS):
        panel(svg, rows, key, title, i * width / 2, width / 2, height, levels)
    programs = sorted({r["tags"]["program"] for r in rows})
    x = 60
    for program in programs:
        svg.append(f'<rect x="{x}" y="{height + 8}" width="14" height="4" fill="{COLOURS.get(program, "#444")}"/>')
        svg.append(f'<text x="{x + 20}" y="{height + 14}">{program}</text>')
        x += 130
    svg.append(f'<text x="{x}" y="{height + 14}" fill="#555">{first["tags"].get("machine", "")}, run {run}, '
               f'{rounds} rounds (dots; line: mean), prompt {first["prompt_tokens"]}, '
               f'{first["max_tokens"]} tokens per request</text>')
    svg.append("</svg>")
    pathlib.Path(out).write_text("\n".join(svg) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
