#!/usr/bin/env python3
"""Draw bench/run-all.sh's CSV as a PNG: one panel per metric, Baton next to what it is
compared with (Postfix, raw AWS calls, SMTP, ...), the ratio written on each panel.

    chart.py RESULTS.csv OUT.png

The CSV's header is script,metric,unit,baton,other,other_name,better,baton_rounds,other_rounds
(rounds: ';'-separated per-round values, drawn as dots on the bars). A metric with no other
side (other empty, other_name "-") gets one bar and no ratio. Needs matplotlib (run-all.sh
installs it into .venv-bench).
"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BATON_COLOR = "#1f77b4"
OTHER_COLOR = "#ff7f0e"


def number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def rounds(text):
    return [v for v in (number(x) for x in (text or "").split(";")) if v is not None]


def ratio_text(row, baton, other):
    """Baton / other, said so that a reader sees at once which way is better."""
    name = row["other_name"]
    if baton is None or other is None or other == 0 or baton == 0:
        return ""
    if row["better"] == "lower":
        return f"{name} / Baton = {other / baton:.2f}x\n(lower is better)"
    return f"Baton / {name} = {baton / other:.2f}x\n(higher is better)"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py RESULTS.csv OUT.png")
    with open(sys.argv[1], newline="") as f:
        rows = [r for r in csv.DictReader(f) if number(r.get("baton")) is not None]
    if not rows:
        sys.exit(f"chart.py: no results with a Baton value in {sys.argv[1]}")
    cols = min(4, len(rows))
    lines = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4.2 * cols, 3.6 * lines), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        baton, other = number(row["baton"]), number(row["other"])
        labels, values, colors, dots = ["Baton"], [baton], [BATON_COLOR], [rounds(row.get("baton_rounds"))]
        if other is not None and row["other_name"] not in ("", "-"):
            labels.append(row["other_name"])
            values.append(other)
            colors.append(OTHER_COLOR)
            dots.append(rounds(row.get("other_rounds")))
        bars = ax.bar(labels, values, color=colors, width=0.6)
        if len(values) == 1:
            ax.set_xlim(-1.5, 1.5)
        for i, pts in enumerate(dots):
            if len(pts) > 1:
                ax.scatter([i] * len(pts), pts, color="black", s=10, zorder=3)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{row['script']}: {row['metric']}", fontsize=9)
        ax.set_ylabel(row["unit"], fontsize=8)
        ax.tick_params(labelsize=8)
        top = max(values + [p for pts in dots for p in pts])
        ax.set_ylim(0, top * 1.35 if top > 0 else 1)
        text = ratio_text(row, baton, other)
        if text:
            ax.text(0.5, 0.97, text, transform=ax.transAxes, ha="center", va="top", fontsize=8,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    fig.suptitle(f"Baton benchmarks ({sys.argv[1].rsplit('/', 1)[-1]})", fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)
    print(f"chart: {len(rows)} panels -> {sys.argv[2]}")


if __name__ == "__main__":
    main()
