#!/usr/bin/env python3
"""Plot bitnet-run bench results (JSON lines) as an SVG bar chart: tokens/s per test and thread
count, one group per model. Standard library only.

Usage: plot.py RESULTS_DIR OUT.svg
"""
import json
import pathlib
import sys


def load(results):
    rows = []
    for path in sorted(pathlib.Path(results).glob("*.jsonl")):
        if path.stem.startswith(("pool-", "serve-")):  # pool: tables only; serve: plot_serve.py
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                d["file"] = path.stem
                rows.append(d)
    return rows


def main(results, out):
    rows = load(results)
    groups = {}
    for r in rows:
        groups.setdefault(r["file"], []).append(r)
    width, height, left, bottom, top = 900, 420, 60, 90, 40
    bars = sum(len(g) for g in groups.values()) + len(groups)
    bar_w = (width - left - 20) / max(bars, 1)
    peak = max(r["tokens_per_second"] for r in rows) * 1.1
    scale = (height - bottom - top) / peak
    colours = {1: "#7aa6d6", 2: "#1f5f9f"}
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">bitnet-run bench: tokens/s (light: 1 thread, dark: 2 threads)</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="black"/>']
    for tick in range(0, int(peak) + 1, max(10, int(peak / 8) // 10 * 10)):
        y = height - bottom - tick * scale
        svg.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}</text>')
        svg.append(f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ddd"/>')
    x = left + bar_w / 2
    for name, g in groups.items():
        start = x
        for r in sorted(g, key=lambda r: (r["test"], r["threads"])):
            h = r["tokens_per_second"] * scale
            y = height - bottom - h
            svg.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.9:.1f}" height="{h:.1f}" fill="{colours.get(r["threads"], "#444")}"/>')
            svg.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="9">{r["tokens_per_second"]:.0f}</text>')
            svg.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{height - bottom + 12}" text-anchor="middle" font-size="9">{r["test"]}</text>')
            x += bar_w
        svg.append(f'<text x="{(start + x) / 2:.1f}" y="{height - bottom + 30}" text-anchor="middle">{name}</text>')
        x += bar_w
    svg.append("</svg>")
    pathlib.Path(out).write_text("\n".join(svg) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
