"""The chaos campaign's report: chaos.json (everything) and chaos.html, one self-contained page
(inline SVG and CSS, no script): the holders of each shared address per unit over time, faults
as bands, client outages, violations marked; the summary per fault kind; every fault and every
violation. Pure rendering of the campaign's result (carpool.lab.chaos.Campaign.analyse)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .ns import write_file

UNIT_COLOUR = {"a": "#2b7bb9", "b": "#e08a1e"}
PX_PER_S = 12  # horizontal scale, capped so a long campaign stays a reasonable file
MAX_WIDTH = 24000
ROW, LEFT = 22, 150


def summary_table(result: dict) -> str:
    """The summary per fault kind as plain text (the CLI prints it)."""
    rows = [("fault", "count", "failed", "outage median", "outage max", "violations")]
    for kind, r in result["summary"].items():
        rows.append(
            (
                kind,
                str(r["count"]),
                str(r["failed"]),
                _s(r["outage_median"]),
                _s(r["outage_max"]),
                str(r["violations"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _s(x) -> str:
    return "-" if x is None else f"{x:.3f}s"


def svg_timeline(result: dict) -> str:
    t0, t1 = result["start"], result["end"]
    span = max(t1 - t0, 1.0)
    width = int(min(span * PX_PER_S, MAX_WIDTH))
    scale = width / span
    held = result["held"]
    rows = sorted(held) or []
    keys = sorted({k for k in rows}, key=lambda k: (k.split(" ")[1], k.split(" ")[0]))
    rows = keys + ["client outage", "violations"]
    top = 42  # two lines of fault labels, alternating, so neighbours do not overlap
    height = top + ROW * len(rows) + 20

    def x(t):
        return LEFT + (t - t0) * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + width + 20}" '
        f'height="{height}" font-family="sans-serif" font-size="11">'
    ]
    for n, f in enumerate(result["log"]):  # fault bands behind everything
        if f.get("skipped"):
            continue
        s, e = f["inject"], f.get("heal") or t1
        out.append(
            f'<rect x="{x(s):.1f}" y="{top - 24}" width="{max(1, (e - s) * scale):.1f}" '
            f'height="{ROW * len(rows) + 24}" fill="#888" fill-opacity="0.12">'
            f"<title>#{f['id']} {html.escape(f['kind'])} {f.get('unit') or ''} "
            f"{html.escape(json.dumps(f.get('params', {})))} held {e - s:.2f}s, "
            f"outage {f.get('outage')}s</title></rect>"
        )
        out.append(
            f'<text x="{x(s) + 2:.1f}" y="{top - 2 - 12 * (n % 2)}" fill="#555">#{f["id"]} '
            f"{html.escape(f['kind'])}</text>"
        )
    for c in result.get("canaries", []):
        out.append(
            f'<rect x="{x(c["start"]):.1f}" y="{top - 12}" '
            f'width="{max(1, (c["end"] - c["start"]) * scale):.1f}" '
            f'height="{ROW * len(rows) + 12}" fill="#a0f" fill-opacity="0.12">'
            f"<title>canary on {c['unit']}: {html.escape(c.get('verdict', ''))}"
            f"</title></rect>"
        )
    for i, key in enumerate(rows):
        y = top + i * ROW
        out.append(f'<text x="4" y="{y + 14}">{html.escape(key)}</text>')
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + width}" y1="{y + ROW - 2}" '
            f'y2="{y + ROW - 2}" stroke="#ddd"/>'
        )
        if key in held:
            colour = UNIT_COLOUR.get(key.split(" ")[0], "#444")
            for s, e in held[key]:
                out.append(
                    f'<rect x="{x(s):.1f}" y="{y + 3}" width="{max(1, (e - s) * scale):.1f}"'
                    f' height="{ROW - 8}" fill="{colour}"><title>{html.escape(key)} held '
                    f"{e - s:.3f}s</title></rect>"
                )
        elif key == "client outage":
            for s, e in result.get("gaps", []):
                out.append(
                    f'<rect x="{x(s):.1f}" y="{y + 3}" width="{max(1, (e - s) * scale):.1f}"'
                    f' height="{ROW - 8}" fill="#c00"><title>no echo reply for '
                    f"{e - s:.3f}s</title></rect>"
                )
        else:
            for v in result["violations"]:
                colour = "#a0f" if v["canary"] else "#c00"
                out.append(
                    f'<rect x="{x(v["start"]) - 1:.1f}" y="{y + 1}" '
                    f'width="{max(3, v["duration"] * scale):.1f}" height="{ROW - 4}" '
                    f'fill="none" stroke="{colour}" stroke-width="2"><title>'
                    f"{v['invariant']}{' (canary)' if v['canary'] else ''}: "
                    f"{html.escape(v['detail'])}</title></rect>"
                )
    for s in range(0, int(span) + 1, 10 if span < 600 else 60):  # time axis
        out.append(f'<text x="{x(t0 + s):.1f}" y="{height - 4}" fill="#777">{s}s</text>')
    out.append("</svg>")
    return "\n".join(out)


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def render_html(result: dict) -> str:
    t0 = result["start"]
    verdict = "PASS" if result["violation_count"] == 0 and result["canary_ok"] else "FAIL"
    summary = _table(
        ["fault", "count", "failed", "outage median", "outage max", "violations"],
        [
            [
                k,
                r["count"],
                r["failed"],
                _s(r["outage_median"]),
                _s(r["outage_max"]),
                r["violations"],
            ]
            for k, r in result["summary"].items()
        ],
    )
    faults = _table(
        ["#", "kind", "unit", "params", "at", "held", "outage", "outcome"],
        [
            [
                f["id"],
                f["kind"],
                f.get("unit") or "",
                json.dumps(f.get("params", {})),
                f"{f['inject'] - t0:.2f}s",
                f"{(f.get('heal') or f['inject']) - f['inject']:.2f}s" if f.get("heal") else "",
                _s(f.get("outage")),
                "; ".join(
                    x for x in (f.get("error"), f.get("outcome"), *f.get("incidents", [])) if x
                ),
            ]
            for f in result["log"]
        ],
    )
    violations = _table(
        ["invariant", "address", "unit", "at", "duration", "faults", "detail"],
        [
            [
                v["invariant"] + (" (canary)" if v["canary"] else ""),
                v["address"] or "",
                v["unit"] or "",
                f"{v['start'] - t0:.3f}s",
                f"{v['duration']:.3f}s",
                ", ".join(map(str, v["faults"])),
                v["detail"],
            ]
            for v in result["violations"]
        ],
    )
    b = result["bounds"]
    canaries = "; ".join(c["verdict"] for c in result["canaries"]) or "no canary ran"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>carpool chaos: seed {result["seed"]}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
.timeline {{ overflow-x: auto; border: 1px solid #ddd; }}
.PASS {{ color: #080; }} .FAIL {{ color: #c00; }}
</style></head><body>
<h1>carpool chaos campaign: <span class="{verdict}">{verdict}</span></h1>
<p><code>{html.escape(result["command"])}</code> &mdash; {result["faults"]} faults in
{result["duration"]:.0f}s; {result["violation_count"]} violations (canary excluded).
Bounds: two holders &le; {b["overlap"]:.3f}s, stale address &le; {b["stale"]:.3f}s, takeover
&le; {b["takeover"]:.3f}s (advert {b["advert"]:g}s, master down {b["master_down"]:g}s,
sampling {b["sample"]:g}s). Canary: {html.escape(canaries)}.
Longest beyond the bounds: two holders {result["longest"]["double_holder"]}s, stale address
{result["longest"]["stale_address"]}s. Samples: {result["samples"]["count"]}
(longest gap {result["samples"]["max_gap"]}s).</p>
<h2>Timeline</h2>
<p>Blue: unit a holds the address, orange: unit b; grey bands: faults (hover for details),
violet: the canary; red: client outage (no echo reply) and violations.</p>
<div class="timeline">{svg_timeline(result)}</div>
<h2>Per fault kind</h2>{summary}
<h2>Violations</h2>{violations if result["violations"] else "<p>none</p>"}
<h2>Faults</h2>{faults}
</body></html>
"""


def write_report(result: dict, directory: str | Path) -> tuple[Path, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_file(d / "chaos.json", json.dumps(result, indent=1, default=str) + "\n")
    write_file(d / "chaos.html", render_html(result))
    return d / "chaos.json", d / "chaos.html"
