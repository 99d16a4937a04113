#!/usr/bin/env python3
"""Draws the charts of docs/perf/README.md from the relais-bench reports kept beside it.

Usage, from anywhere:

    python3 docs/perf/charts.py

It writes docs/perf/charts/*.svg and prints the files it wrote.
It needs only Python 3's standard library: the SVG is written by hand, so that any machine that can run the bench can redraw the charts.
The same reports give byte-identical files: reports are read in sorted order, every number is written with a fixed format, and nothing depends on the clock, the locale or the order of a dictionary that was not sorted.

The charts, and why each draws what it draws:

- latency-percentiles.svg: p50, p99, p99.9 and the maximum of each run of the current sitting (the reports whose file name starts with CURRENT_SITTING), one panel per scenario, one line per run, coloured by the build the file name says ("before" or "after").
  These are the percentiles relais-bench records (it has no p90).
  A target bound that the report's goal states for a percentile ("p99 < 10 ms") is drawn as a black bar at that percentile, only in panels whose runs the bench judged against it.
- throughput-devices.svg: delivered messages per second against the number of devices.
  The kept reports vary the device count only in throughput runs, at 64 and 256 devices, and only three sittings ran both; they are listed in THROUGHPUT_SITTINGS below, since which reports form one sitting is known from docs/perf/history.md, not from the reports.
  Each line is one host and one build: hosts of the same kind differ by up to twice in speed, so compare slopes, not heights across lines.
- idle-memory.svg: the relay's resident memory per idle connection against the number of connections.
  It is the only sweep in the kept reports over more than two sizes (IDLE_SWEEPS below: one host, two builds), and it shows how far from the target's 50,000 connections the measurements stop (the machine grants 20,000 file descriptors).
"""

import json
import math
import re
import statistics
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
OUT = HERE / "charts"

# Okabe and Ito's palette, which readers with any common colour-vision deficiency can tell apart.
# Every series also differs by marker shape and dash, so the charts survive printing in grey.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
MARKERS = ["circle", "square", "triangle", "diamond"]
DASHES = ["", "7 4", "2 3", "9 3 2 3"]
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
# Approximate advance of one character of FONT, as a fraction of the font size; used to keep labels apart.
CHAR_WIDTH = 0.6
TEXT = "#222222"
GRID = "#DDDDDD"

# The sitting the latency chart draws: the reports whose file name starts with this. Two
# sittings can share a day, so it is named rather than guessed from the newest date.
CURRENT_SITTING = "2026-12-07-crate-walls-"

# Sittings that measured throughput at more than one device count: a label (the host and build, then when) and the reports.
# A sitting is one host and one build, so its runs may be compared with each other.
THROUGHPUT_SITTINGS = [
    (
        ("second host, 1463387", "2026-11-27 22:08–22:11"),
        [
            "2026-11-27-throughput-second-host-1",
            "2026-11-27-throughput-second-host-2",
            "2026-11-27-throughput-second-host-3",
            "2026-11-27-throughput-256-second-host",
        ],
    ),
    (
        ("first host, fe2fd5d", "2026-11-27 16:34–16:46"),
        [
            "2026-11-27-throughput-8k-1",
            "2026-11-27-throughput-8k-2",
            "2026-11-27-throughput-8k-3",
            "2026-11-27-throughput-256-8k",
        ],
    ),
    (
        ("first host, ea18370", "2026-11-27 00:35–00:43"),
        [
            "2026-11-27-throughput-metrics-on-1",
            "2026-11-27-throughput-metrics-on-2",
            "2026-11-27-throughput-metrics-on-3",
            "2026-11-27-throughput-256",
        ],
    ),
]

# Idle runs over several connection counts, one build each, all on the second host.
IDLE_SWEEPS = [
    (
        ("b7911c7, 1 KiB read buffer", "2026-11-27 23:44–23:46"),
        [
            "2026-11-27-idle-5000-read-buffer-1k",
            "2026-11-27-idle-15000-read-buffer-1k",
            "2026-11-27-idle-18900-read-buffer-1k",
        ],
    ),
    (
        ("09005b1, 2 KiB read buffer", "2026-11-27 22:24–22:27"),
        [
            "2026-11-27-idle-5000-second-host",
            "2026-11-27-idle-10000-second-host",
            "2026-11-27-idle-15000-second-host",
            "2026-11-27-idle-18900-second-host",
        ],
    ),
]

# The idle target, from the reports' goal: "< 16 KiB of relay memory each".
IDLE_TARGET_KIB = 16.0
# The throughput target, from the reports' goal: "at least 50,000 msg/s delivered".
THROUGHPUT_TARGET = 50000.0

PERCENTILES = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]


def main():
    reports = load_reports(HERE)
    OUT.mkdir(exist_ok=True)
    charts = {
        "latency-percentiles.svg": latency_percentiles(reports),
        "throughput-devices.svg": throughput_devices(reports),
        "idle-memory.svg": idle_memory(reports),
    }
    for name, svg in charts.items():
        path = OUT / name
        path.write_text(svg, encoding="utf-8", newline="\n")
        print(path.relative_to(HERE.parent.parent))


def load_reports(directory):
    """Every relais-bench report in `directory`, by file name without `.json`, in name order."""
    reports = {}
    for path in sorted(directory.glob("*.json")):
        with path.open(encoding="utf-8") as file:
            reports[path.stem] = json.load(file)
    return reports


# The charts.


def latency_percentiles(reports):
    newest = CURRENT_SITTING.rstrip("-")
    sitting = {
        name: r for name, r in reports.items() if name.startswith(CURRENT_SITTING) and r.get("latency_ms")
    }
    panels = {}
    for name, report in sitting.items():
        panels.setdefault(panel_title(report), []).append((name, report))
    variants = sorted({variant_of(name) for name in sitting})
    style = {variant: i for i, variant in enumerate(variants)}
    machine = next(iter(sitting.values()))["machine"]

    width, height = 980, 470
    svg = Svg(width, height)
    svg.title(
        f"Latency percentiles, sitting of {newest}",
        f"{machine_line(machine)}; one line per run of docs/perf/{newest}-*.json, coloured by build",
    )
    legend = [(variant, style[variant]) for variant in variants]
    legend_right(svg, legend, y=72, target=True)

    left, top, bottom, gap = 78, 130, 400, 74
    panel_width = (width - left - 30 - gap * (len(panels) - 1)) / len(panels)
    for index, (title, runs) in enumerate(sorted(panels.items(), key=lambda item: panel_order(item[1][0][1]))):
        x0 = left + index * (panel_width + gap)
        values = [r["latency_ms"][key] for _, r in runs for key, _ in PERCENTILES]
        targets = targets_of(runs)
        # Headroom above the highest value keeps a target's label clear of the panel's title.
        high = max(values + [value for _, value in targets]) * 1.08
        ticks = nice_ticks(0.0, high, 5)
        x_range = (-0.25, len(PERCENTILES) - 0.75)
        axes = Axes(svg, x0, top, panel_width, bottom - top, x_range, (ticks[0], ticks[-1]))
        axes.frame(ticks, latency_meaning(runs[0][1]))
        axes.panel_title(title)
        for i, (_, label) in enumerate(PERCENTILES):
            axes.x_label(float(i), label)
        axes.x_axis_title("percentile")
        for name, report in sorted(runs):
            s = style[variant_of(name)]
            points = [(float(i), report["latency_ms"][key]) for i, (key, _) in enumerate(PERCENTILES)]
            axes.series(points, s)
        for key, value in targets:
            i = [k for k, _ in PERCENTILES].index(key)
            axes.target_mark(float(i), value)
    return svg.render()


def throughput_devices(reports):
    width, height = 820, 500
    svg = Svg(width, height)
    svg.title(
        "Throughput against the number of devices",
        "relais-bench throughput [--devices 256]: SQLite, durability full, 1 KiB, window 32, 10 s",
    )
    series = []
    for label, names in THROUGHPUT_SITTINGS:
        runs = [reports[name] for name in names]
        points = [(float(r["params"]["devices"]), r["delivered_msgs_per_s"]) for r in runs]
        series.append((label, points))
    devices = sorted({x for _, points in series for x, _ in points})
    high = max([y for _, points in series for _, y in points] + [THROUGHPUT_TARGET])
    ticks = nice_ticks(0.0, high, 5)
    left, top, right, bottom = 100, 86, 560, 430
    axes = Axes(
        svg,
        left,
        top,
        right - left,
        bottom - top,
        (math.log2(devices[0]) - 0.35, math.log2(devices[-1]) + 0.35),
        (ticks[0], ticks[-1]),
    )
    axes.frame(ticks, "delivered msg/s")
    for d in devices:
        axes.x_label(math.log2(d), number(d))
    axes.x_axis_title("devices (half send, half receive)")
    axes.target_line(THROUGHPUT_TARGET, "target ≥ 50,000 msg/s")
    for s, (_, points) in enumerate(series):
        logged = [(math.log2(x), y) for x, y in points]
        axes.scatter(logged, s)
        medians = [(math.log2(d), statistics.median(y for x, y in points if x == d)) for d in devices]
        axes.series(medians, s, markers=False)
    legend_block(
        svg,
        [(label, s) for s, (label, _) in enumerate(series)],
        x=right + 30,
        y=top + 10,
        note=["dots: runs; lines: medians", "", "Hosts differ by up to twice", "in speed: compare slopes,", "not heights across lines."],
    )
    return svg.render()


def idle_memory(reports):
    width, height = 820, 500
    svg = Svg(width, height)
    svg.title(
        "Relay memory per idle connection",
        "relais-bench idle --connections C; resident memory growth / C; second host",
    )
    series = []
    for label, names in IDLE_SWEEPS:
        runs = sorted((reports[name] for name in names), key=lambda r: r["params"]["connections"])
        points = [(float(r["params"]["connections"]), r["daemon"]["rss_bytes_per_connection"] / 1024.0) for r in runs]
        series.append((label, points))
    xs = [x for _, points in series for x, _ in points]
    ys = [y for _, points in series for _, y in points] + [IDLE_TARGET_KIB]
    y_ticks = nice_ticks(math.floor(min(ys)) - 0.5, max(ys) + 0.25, 5)
    x_ticks = nice_ticks(0.0, max(xs), 4)
    left, top, right, bottom = 100, 86, 560, 430
    axes = Axes(svg, left, top, right - left, bottom - top, (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1]))
    axes.frame(y_ticks, "KiB per connection")
    for x in x_ticks:
        axes.x_label(x, number(x))
    axes.x_axis_title("idle authenticated connections")
    axes.target_line(IDLE_TARGET_KIB, "target < 16 KiB")
    for s, (_, points) in enumerate(series):
        axes.series(points, s)
    legend_block(
        svg,
        [(label, s) for s, (label, _) in enumerate(series)],
        x=right + 30,
        y=top + 10,
        note=[
            "The target is stated at 50,000",
            "connections; this machine grants",
            "20,000 file descriptors, so the",
            "runs stop at 18,900.",
        ],
    )
    return svg.render()


# What the charts read from the reports.


def panel_title(report):
    """The scenario and the parameters that set it apart, as the command line would say them."""
    params = report["params"]
    scenario = report["scenario"]
    if scenario == "latency":
        title = f"latency --rate {params['rate_per_s']:.0f}"
    elif scenario == "fanout":
        title = f"fanout --group {params['group']}"
        if params.get("rate_per_s") not in (None, 20.0):
            title += f" --rate {params['rate_per_s']:.0f}"
    else:
        title = scenario
    if params.get("storage") not in (None, "sqlite"):
        title += " (PostgreSQL)"
    return title


def panel_order(report):
    """Panels read left to right from the closed-loop load to the single group."""
    order = ["throughput", "latency", "fanout"]
    scenario = report["scenario"]
    return (order.index(scenario) if scenario in order else len(order), panel_title(report))


def variant_of(name):
    """The build a run's file name names: `…-after-2` is "after"; a name without one is "run"."""
    match = re.search(r"-(before|after)(?:-\d+)?$", name)
    return match.group(1) if match else "run"


def latency_meaning(report):
    """What the latency of a scenario counts, as the report's field documents it."""
    if report["scenario"] == "fanout":
        return "ms, scheduled send to last member"
    return "ms, scheduled send to receipt"


def targets_of(runs):
    """The percentile bounds the runs' goal states, when the bench judged the runs against it."""
    if all(report["target"]["met"] is None for _, report in runs):
        return []
    goal = runs[0][1]["target"]["goal"]
    keys = {"p50": "p50", "p99": "p99", "p99.9": "p999"}
    return [(keys[p], float(v)) for p, v in re.findall(r"(p50|p99\.9|p99) < (\d+(?:\.\d+)?) ms", goal)]


def machine_line(machine):
    gib = machine["memory_bytes"] / 1024**3
    return f"{machine['cores']} cores, {gib:.1f} GiB, Linux {machine['kernel']}"


# Drawing.


class Svg:
    """An SVG document built element by element, with every number written to one decimal."""

    def __init__(self, width, height):
        self.width = width
        self.height = height
        self.body = []

    def add(self, element):
        self.body.append(element)

    def title(self, title, subtitle):
        self.heading = title
        self.text(24, 34, title, size=19, weight="bold")
        self.text(24, 58, subtitle, size=13, colour="#555555")

    def text(self, x, y, content, size=13, anchor="start", colour=TEXT, weight=None, rotate=False, halo=False):
        attributes = f'x="{f1(x)}" y="{f1(y)}" font-size="{size}" fill="{colour}"'
        if halo:
            # A white outline under the glyphs keeps a label readable where it crosses a line.
            attributes += ' stroke="#FFFFFF" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'
        if anchor != "start":
            attributes += f' text-anchor="{anchor}"'
        if weight:
            attributes += f' font-weight="{weight}"'
        if rotate:
            attributes += f' transform="rotate(-90 {f1(x)} {f1(y)})"'
        self.add(f"<text {attributes}>{escape(content)}</text>")

    def line(self, x1, y1, x2, y2, colour=TEXT, width=1.0, dash=""):
        dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{f1(x1)}" y1="{f1(y1)}" x2="{f1(x2)}" y2="{f1(y2)}" '
            f'stroke="{colour}" stroke-width="{f1(width)}"{dash_attribute}/>'
        )

    def polyline(self, points, colour, width=2.0, dash=""):
        dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
        coordinates = " ".join(f"{f1(x)},{f1(y)}" for x, y in points)
        self.add(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="{f1(width)}" stroke-linejoin="round"{dash_attribute}/>'
        )

    def marker(self, x, y, shape, colour, size=4.5):
        if shape == "circle":
            self.add(f'<circle cx="{f1(x)}" cy="{f1(y)}" r="{f1(size)}" fill="{colour}"/>')
        elif shape == "square":
            s = size * 0.9
            self.add(f'<rect x="{f1(x - s)}" y="{f1(y - s)}" width="{f1(2 * s)}" height="{f1(2 * s)}" fill="{colour}"/>')
        elif shape == "triangle":
            s = size * 1.2
            self.add(
                f'<polygon points="{f1(x)},{f1(y - s)} {f1(x + s)},{f1(y + s * 0.8)} '
                f'{f1(x - s)},{f1(y + s * 0.8)}" fill="{colour}"/>'
            )
        else:
            s = size * 1.2
            self.add(
                f'<polygon points="{f1(x)},{f1(y - s)} {f1(x + s)},{f1(y)} {f1(x)},{f1(y + s)} '
                f'{f1(x - s)},{f1(y)}" fill="{colour}"/>'
            )

    def render(self):
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">\n'
            f"<title>{escape(self.heading)}</title>\n"
            f'<rect width="{self.width}" height="{self.height}" fill="#FFFFFF"/>\n'
        )
        return head + "\n".join(self.body) + "\n</svg>\n"


class Axes:
    """A plotting area: data coordinates in, SVG coordinates out."""

    def __init__(self, svg, x, y, width, height, x_range, y_range):
        self.svg = svg
        self.x, self.y, self.width, self.height = x, y, width, height
        self.x_range, self.y_range = x_range, y_range

    def px(self, value):
        low, high = self.x_range
        return self.x + (value - low) / (high - low) * self.width

    def py(self, value):
        low, high = self.y_range
        return self.y + self.height - (value - low) / (high - low) * self.height

    def frame(self, y_ticks, y_title):
        """Grid lines and labels at `y_ticks`, the axes, and the y axis's title."""
        widest = 0
        for tick in y_ticks:
            y = self.py(tick)
            self.svg.line(self.x, y, self.x + self.width, y, colour=GRID)
            label = number(tick)
            widest = max(widest, len(label))
            self.svg.text(self.x - 8, y + 4.5, label, anchor="end")
        self.svg.line(self.x, self.y, self.x, self.y + self.height)
        self.svg.line(self.x, self.y + self.height, self.x + self.width, self.y + self.height)
        title_x = self.x - 8 - widest * 13 * CHAR_WIDTH - 12
        self.svg.text(title_x, self.y + self.height / 2, y_title, size=14, anchor="middle", rotate=True)

    def panel_title(self, title):
        self.svg.text(self.x + self.width / 2, self.y - 14, title, size=15, anchor="middle", weight="bold")

    def x_label(self, value, label):
        x = self.px(value)
        self.svg.line(x, self.y + self.height, x, self.y + self.height + 5)
        self.svg.text(x, self.y + self.height + 21, label, anchor="middle")

    def x_axis_title(self, title):
        self.svg.text(self.x + self.width / 2, self.y + self.height + 46, title, size=14, anchor="middle")

    def series(self, points, style, markers=True):
        colour = COLOURS[style % len(COLOURS)]
        coordinates = [(self.px(x), self.py(y)) for x, y in points]
        self.svg.polyline(coordinates, colour, dash=DASHES[style % len(DASHES)])
        if markers:
            for x, y in coordinates:
                self.svg.marker(x, y, MARKERS[style % len(MARKERS)], colour)

    def scatter(self, points, style):
        colour = COLOURS[style % len(COLOURS)]
        for x, y in points:
            self.svg.marker(self.px(x), self.py(y), MARKERS[style % len(MARKERS)], colour, size=4.0)

    def target_mark(self, x_value, y_value):
        """A short black bar: the bound a target sets at one point of the x axis."""
        x, y = self.px(x_value), self.py(y_value)
        half = min(22.0, self.width / (2 * (len(PERCENTILES) + 1)))
        self.svg.line(x - half, y, x + half, y, width=3.0)
        self.svg.text(x, y - 7, f"< {number(y_value)}", size=12, anchor="middle", halo=True)

    def target_line(self, y_value, label):
        y = self.py(y_value)
        self.svg.line(self.x, y, self.x + self.width, y, width=1.5, dash="6 4")
        self.svg.text(self.x + self.width - 4, y - 7, label, size=13, anchor="end", halo=True)


def legend_right(svg, entries, y, target):
    """One row of legend entries ending at the right margin."""
    items = [(label, style) for label, style in entries]
    widths = [34 + len(label) * 13 * CHAR_WIDTH + 22 for label, _ in items]
    if target:
        widths.append(34 + len("target bound") * 13 * CHAR_WIDTH)
    x = svg.width - 24 - sum(widths)
    for (label, style), width in zip(items, widths):
        legend_swatch(svg, x, y, style)
        svg.text(x + 34, y + 4.5, label)
        x += width
    if target:
        svg.line(x, y, x + 26, y, width=3.0)
        svg.text(x + 34, y + 4.5, "target bound")


def legend_block(svg, entries, x, y, note):
    """Legend entries one under the other, each a label and a grey second line, then lines of explanation."""
    for (label, detail), style in entries:
        legend_swatch(svg, x, y, style)
        svg.text(x + 34, y + 4.5, label, size=12)
        svg.text(x + 34, y + 21, detail, size=12, colour="#555555")
        y += 42
    y += 10
    for line in note:
        if line:
            svg.text(x, y + 4.5, line, size=12, colour="#555555")
        y += 18


def legend_swatch(svg, x, y, style):
    colour = COLOURS[style % len(COLOURS)]
    svg.line(x, y, x + 26, y, colour=colour, width=2.0, dash=DASHES[style % len(DASHES)])
    svg.marker(x + 13, y, MARKERS[style % len(MARKERS)], colour)


# Numbers.


def nice_ticks(low, high, count):
    """Round tick values from at or below `low` to at or above `high`, about `count` of them."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def number(value):
    """12345.0 → "12,345"; 2.5 → "2.5": as few decimals as the value needs, up to two."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    text = f"{value:,.2f}".rstrip("0")
    return text


def f1(value):
    """A coordinate: one decimal is finer than a pixel, and fixed, so the output is stable."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


if __name__ == "__main__":
    main()
