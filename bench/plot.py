#!/usr/bin/env python3
"""Tables and curves from bench/scale.sh's results (standard library only).

    python3 bench/plot.py RESULTS [SVG]

RESULTS has one line per run, `key=value` fields (scenario=active:1000
server=oneshotd round=1 req_per_s=... p99_us=...). Prints one markdown
table per scenario (medians over rounds, ranges in brackets, the
oneshotd/tokio ratio taken round by round) and the scale targets;
with SVG, draws the curves as connections grow into that file.
"""

import statistics
import sys
from collections import defaultdict


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if "scenario" in fields:
                kind, _, n = fields["scenario"].partition(":")
                fields["kind"], fields["n"] = kind, int(n)
                runs.append(fields)
    return runs


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Results:
    def __init__(self, runs):
        # (kind, n, server) -> field -> {round: value}
        self.by = defaultdict(lambda: defaultdict(dict))
        for r in runs:
            for k, v in r.items():
                if num(v) is not None:
                    self.by[(r["kind"], r["n"], r["server"])][k][r["round"]] = num(v)

    def counts(self, kind):
        return sorted({n for (k, n, _) in self.by if k == kind})

    def values(self, kind, n, server, field):
        return list(self.by[(kind, n, server)][field].values())

    def median(self, kind, n, server, field):
        v = self.values(kind, n, server, field)
        return statistics.median(v) if v else None

    def ratios(self, kind, n, field):
        o = self.by[(kind, n, "oneshotd")][field]
        t = self.by[(kind, n, "tokio")][field]
        return [o[r] / t[r] for r in o if r in t and t[r]]


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def spread(values, digits=0):
    if not values:
        return "n/a"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def tables(res):
    out = []
    if res.counts("active"):
        out += [
            "Active connections, pipeline 1:",
            "",
            "| connections | oneshotd req/s | tokio req/s | ratio | p99 oneshotd ms | p99 tokio ms | CPU µs/reply oneshotd | tokio | RSS B/conn oneshotd | tokio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in res.counts("active"):
            v = lambda s, f, d=0: spread(res.values("active", n, s, f), d)
            p99 = lambda s: spread([x / 1000 for x in res.values("active", n, s, "p99_us")], 1)
            out.append(
                f"| {fmt(n)} | {v('oneshotd', 'req_per_s')} | {v('tokio', 'req_per_s')} | "
                f"**{spread(res.ratios('active', n, 'req_per_s'), 2)}** | {p99('oneshotd')} | {p99('tokio')} | "
                f"{v('oneshotd', 'cpu_us_per_reply', 2)} | {v('tokio', 'cpu_us_per_reply', 2)} | "
                f"{v('oneshotd', 'rss_b_per_conn')} | {v('tokio', 'rss_b_per_conn')} |"
            )
        out.append("")
        fair = [n for n in res.counts("active") if res.median("active", n, "oneshotd", "served_p50")]
        if fair:
            out += [
                "Replies per connection in the window, medians: the least served 1 % / the median / the most served 1 %:",
                "",
                "| connections | oneshotd | tokio |",
                "|---|---|---|",
            ]
            for n in fair:
                served = lambda s: " / ".join(
                    fmt(res.median("active", n, s, f"served_p{p}")) for p in (1, 50, 99)
                )
                out.append(f"| {fmt(n)} | {served('oneshotd')} | {served('tokio')} |")
            out.append("")
    if res.counts("churn"):
        out += [
            "Churn (connect, one request, verified reply, close; C at a time):",
            "",
            "| at a time | oneshotd conn/s | tokio conn/s | ratio | p99 connect-to-reply oneshotd ms | tokio ms | CPU µs/conn oneshotd | tokio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n in res.counts("churn"):
            v = lambda s, f, d=0: spread(res.values("churn", n, s, f), d)
            p99 = lambda s: spread([x / 1000 for x in res.values("churn", n, s, "p99_us")], 2)
            out.append(
                f"| {fmt(n)} | {v('oneshotd', 'conns_per_s')} | {v('tokio', 'conns_per_s')} | "
                f"**{spread(res.ratios('churn', n, 'conns_per_s'), 2)}** | {p99('oneshotd')} | {p99('tokio')} | "
                f"{v('oneshotd', 'cpu_us_per_reply', 2)} | {v('tokio', 'cpu_us_per_reply', 2)} |"
            )
        out.append("")
    if res.counts("idle"):
        out += [
            "Idle connections (server VmRSS after minus before, per connection):",
            "",
            "| connections | oneshotd B/conn | tokio B/conn |",
            "|---|---|---|",
        ]
        for n in res.counts("idle"):
            out.append(
                f"| {fmt(n)} | {spread(res.values('idle', n, 'oneshotd', 'rss_b_per_conn'))} | "
                f"{spread(res.values('idle', n, 'tokio', 'rss_b_per_conn'))} |"
            )
        out.append("")
    if res.counts("handover"):
        out += [
            "Handover (SIGUSR2 to the next instance's READY=1) and drain (SIGTERM to exit), idle connections, oneshotd:",
            "",
            "| connections | handover s | of which old instance out s | drain s | CPU µs/conn handover (both instances) | CPU µs/conn drain | every connection answered after / closed by the drain |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in res.counts("handover"):
            v = lambda f, d: spread(res.values("handover", n, "oneshotd", f), d)
            ok = res.values("handover", n, "oneshotd", "eof_ok")
            out.append(
                f"| {fmt(n)} | {v('handover_s', 3)} | {v('old_exit_s', 3)} | {v('drain_s', 3)} | "
                f"{v('handover_cpu_us_per_conn', 1)} | {v('drain_cpu_us_per_conn', 1)} | "
                f"{'yes, ' + str(len(ok)) + ' runs' if ok else 'n/a'} |"
            )
        out.append("")
    return out


def targets(res):
    out = ["Targets (medians):"]

    def line(ok, text):
        out.append(f"- {'met' if ok else 'MISSED'}: {text}")

    for kind, field in (("active", "req_per_s"), ("churn", "conns_per_s")):
        for n in res.counts(kind):
            r = res.ratios(kind, n, field)
            if r:
                m = statistics.median(r)
                line(m >= 1.0, f"{kind} {n}: {m:.2f}x tokio (>= 1.0)")
            po = res.median(kind, n, "oneshotd", "p99_us")
            pt = res.median(kind, n, "tokio", "p99_us")
            if po is not None and pt is not None:
                line(po <= pt, f"{kind} {n}: p99 {po / 1000:.2f} ms vs tokio {pt / 1000:.2f} ms")
    for n in res.counts("idle"):
        m = res.median("idle", n, "oneshotd", "rss_b_per_conn")
        if m is not None:
            line(m <= 512, f"idle {n}: {m:.0f} B per connection (<= 512)")
    for n in res.counts("handover"):
        d = res.median("handover", n, "oneshotd", "drain_s")
        h = res.median("handover", n, "oneshotd", "handover_s")
        if n >= 15000:
            line(d <= 0.5, f"drain of {n} idle: {d:.3f} s (<= 0.5)")
            line(h <= 1.0, f"handover of {n} idle: {h:.3f} s (<= 1)")
        else:
            out.append(f"- drain of {n} idle: {d:.3f} s; handover {h:.3f} s")
    return out


# --- SVG --------------------------------------------------------------------

COLOURS = {"oneshotd": "#1f77b4", "tokio": "#d62728", "handover": "#1f77b4", "drain": "#2ca02c"}


def nice_max(v):
    """The smallest 4 x (1, 2, 2.5 or 5 x 10^k) at least 5 % above v."""
    import math

    if v <= 0:
        return 1
    quarter = v * 1.05 / 4
    k = 10 ** math.floor(math.log10(quarter))
    for m in (1, 2, 2.5, 5, 10):
        if m * k >= quarter:
            return 4 * m * k
    return 40 * k


def panel(x0, y0, w, h, title, xlabel, series, ylabel):
    """series: [(name, [(x, y), ...])] drawn as lines with points."""
    xs = [x for _, pts in series for x, _ in pts] or [1]
    ys = [y for _, pts in series for _, y in pts] or [1]
    xmax, ymax = nice_max(max(xs)), nice_max(max(ys))
    # Room on the left for tick labels like "200 000" and the axis name.
    px = lambda x: x0 + 66 + (w - 86) * x / xmax
    py = lambda y: y0 + h - 40 - (h - 70) * y / ymax
    s = [f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">{title}</text>']
    s.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(xmax)}" y2="{py(0)}" stroke="black"/>')
    s.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(0)}" y2="{py(ymax)}" stroke="black"/>')
    for i in range(5):
        yv = ymax * i / 4
        s.append(f'<line x1="{px(0)}" y1="{py(yv)}" x2="{px(xmax)}" y2="{py(yv)}" stroke="#ddd"/>')
        label = f"{yv:,.0f}".replace(",", " ") if ymax >= 40 else f"{yv:g}"
        s.append(f'<text x="{px(0) - 4}" y="{py(yv) + 4}" text-anchor="end" font-size="10">{label}</text>')
        xv = xmax * i / 4
        s.append(f'<text x="{px(xv)}" y="{py(0) + 14}" text-anchor="middle" font-size="10">{xv:,.0f}</text>'.replace(",", " "))
    s.append(f'<text x="{x0 + w / 2}" y="{y0 + h - 8}" text-anchor="middle" font-size="11">{xlabel}</text>')
    s.append(f'<text x="{x0 + 10}" y="{y0 + h / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 {x0 + 10} {y0 + h / 2})">{ylabel}</text>')
    for k, (name, pts) in enumerate(series):
        c = COLOURS.get(name, "#555")
        pts = sorted(pts)
        if len(pts) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            s.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        s.append(f'<rect x="{x0 + w - 110}" y="{y0 + 28 + 16 * k}" width="10" height="10" fill="{c}"/>')
        s.append(f'<text x="{x0 + w - 96}" y="{y0 + 37 + 16 * k}" font-size="11">{name}</text>')
    return s


def svg(res, path):
    def curve(kind, server, field, scale=1.0):
        return [
            (n, res.median(kind, n, server, field) * scale)
            for n in res.counts(kind)
            if res.median(kind, n, server, field) is not None
        ]

    w, h = 420, 280
    parts = []
    parts += panel(0, 0, w, h, "Active connections, pipeline 1", "connections", [(s, curve("active", s, "req_per_s")) for s in ("oneshotd", "tokio")], "replies per second")
    parts += panel(w, 0, w, h, "Server CPU per reply", "connections", [(s, curve("active", s, "cpu_us_per_reply")) for s in ("oneshotd", "tokio")], "CPU µs per reply")
    parts += panel(0, h, w, h, "p99 latency, pipeline 1", "connections", [(s, curve("active", s, "p99_us", 1e-3)) for s in ("oneshotd", "tokio")], "p99 ms")
    parts += panel(w, h, w, h, "Handover and drain, idle connections", "connections", [("handover", curve("handover", "oneshotd", "handover_s")), ("drain", curve("handover", "oneshotd", "drain_s"))], "seconds")
    body = "\n".join(parts)
    with open(path, "w") as f:
        f.write(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h}" '
            f'viewBox="0 0 {2 * w} {2 * h}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
        )


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    res = Results(load(sys.argv[1]))
    print("\n".join(tables(res) + targets(res)))
    if len(sys.argv) == 3:
        svg(res, sys.argv[2])
        print(f"\ncurves drawn in {sys.argv[2]}")


if __name__ == "__main__":
    main()
