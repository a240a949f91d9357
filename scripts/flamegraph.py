#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws a flame graph as a small SVG.

    perf record -e cpu-clock -F 997 -g --call-graph dwarf,16384 -p PID -- sleep 12
    perf script -i perf.data | python3 scripts/flamegraph.py --title "..." > out.svg

The same picture as Brendan Gregg's flamegraph.pl (stackcollapse-perf + flamegraph),
without installing anything: root at the bottom, one box per frame, width = share of
samples, kernel frames orange, libc frames green, roomcast and its crates red-yellow.
Frames narrower than --min-percent are left out, so the file stays small; hovering over a
box shows its full name and share.
"""

import argparse
import html
import re
import sys
import zlib
from collections import defaultdict

WIDTH = 1200
ROW = 16
FONT = 11
CHAR = FONT * 0.59


def fold(lines):
    """Counts each distinct stack (root first) in `perf script` output."""
    stacks = defaultdict(int)
    frames = []
    in_sample = False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[tuple(reversed(frames))] += 1
            frames, in_sample = [], False
            continue
        if not line.startswith((" ", "\t")):
            in_sample = True
            continue
        if not in_sample:
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) < 2:
            continue
        rest = parts[1]
        dso = ""
        match = re.search(r" \(([^)]*)\)$", rest)
        if match:
            dso = match.group(1)
            rest = rest[: match.start()]
        name = re.sub(r"\+0x[0-9a-f]+$", "", rest)
        if name == "[unknown]":
            name = "[unknown " + dso.rsplit("/", 1)[-1] + "]"
        kind = "k" if "kernel" in dso or dso.startswith("[") else ("c" if "libc" in dso else "u")
        frames.append((short(name), kind))
    if frames:
        stacks[tuple(reversed(frames))] += 1
    return stacks


def short(name):
    """Drops generic arguments (often longer than the rest of the name)."""
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            depth += 1
            if depth == 1:
                out.append("<…>")
            continue
        if ch == ">" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out).replace("<…><…>", "<…>")


class Node:
    __slots__ = ("name", "kind", "count", "children")

    def __init__(self, name, kind):
        self.name, self.kind, self.count, self.children = name, kind, 0, {}


def tree(stacks):
    root = Node("all", "r")
    for stack, count in stacks.items():
        root.count += count
        node = root
        for name, kind in stack:
            node = node.children.setdefault((name, kind), Node(name, kind))
            node.count += count
    return root


def color(node):
    seed = zlib.crc32(node.name.encode()) % 1000 / 1000
    if node.kind == "k":
        return "rgb(%d,%d,%d)" % (225 + 30 * seed, 120 + 60 * seed, 40)
    if node.kind == "c":
        return "rgb(%d,%d,%d)" % (90 + 50 * seed, 190 + 40 * seed, 90)
    if node.kind == "r":
        return "rgb(200,200,200)"
    return "rgb(%d,%d,%d)" % (205 + 50 * seed, 60 + 150 * seed, 50 * seed)


def draw(root, title, min_percent):
    boxes = []
    depth_max = 0

    def walk(node, x, depth):
        nonlocal depth_max
        width = node.count / root.count * (WIDTH - 20)
        if node.count / root.count * 100 < min_percent:
            return
        depth_max = max(depth_max, depth)
        boxes.append((node, x, depth, width))
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            walk(child, child_x, depth + 1)
            child_x += child.count / root.count * (WIDTH - 20)

    walk(root, 10, 0)
    height = (depth_max + 1) * ROW + 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="Verdana,sans-serif" font-size="{FONT}">',
        f'<rect width="100%" height="100%" fill="#f8f8f8"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="15">{html.escape(title)}</text>',
    ]
    for node, x, depth, width in boxes:
        y = height - 10 - (depth + 1) * ROW
        share = node.count / root.count * 100
        label = f"{node.name} ({node.count} samples, {share:.2f}%)"
        text = node.name
        fits = int((width - 4) / CHAR)
        if fits < 3:
            text = ""
        elif len(text) > fits:
            text = text[: fits - 1] + "…"
        out.append(
            f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" y="{y}" '
            f'width="{max(width - 0.5, 0.5):.1f}" height="{ROW - 1}" fill="{color(node)}"/>'
            + (f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{html.escape(text)}</text>' if text else "")
            + "</g>"
        )
    out.append("</svg>")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--title", default="Flame graph")
    parser.add_argument("--min-percent", type=float, default=0.1)
    parser.add_argument("--folded", help="also write the folded stacks here")
    args = parser.parse_args()
    stacks = fold(sys.stdin)
    if args.folded:
        with open(args.folded, "w") as f:
            for stack, count in sorted(stacks.items()):
                f.write(";".join(name for name, _ in stack) + f" {count}\n")
    print(draw(tree(stacks), args.title, args.min_percent))


if __name__ == "__main__":
    main()
