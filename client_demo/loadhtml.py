"""The load report as CSV (the per-second time series) and as one self-contained HTML page.

The charts are drawn by matplotlib (Agg, no display) as SVG and inlined in the page, so
the file opens anywhere without a network or a script. Imported only for --csv/--html.
"""

from __future__ import annotations

import csv
import html
import io
from typing import IO

from client_demo.loadreport import report_rows

SERIES_COLUMNS = ("t_s", "clients", "snapshots_per_s", "rtt_p50_ms", "rtt_p99_ms",
                  "bytes_in", "errors")


def write_csv(report: dict, out: IO[str]) -> None:
    """One row per second of the run, with a header row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SERIES_COLUMNS)
    for row in report["timeseries"]:
        writer.writerow(["" if row[k] is None else row[k] for k in SERIES_COLUMNS])


def _charts_svg(series: list[dict]) -> str:
    import matplotlib
    matplotlib.use("Agg")  # no display; the figure is only ever written to a buffer
    from matplotlib.figure import Figure

    t = [r["t_s"] for r in series]
    nan = float("nan")
    fig = Figure(figsize=(10, 9), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    axes[0].plot(t, [r["clients"] for r in series], color="tab:blue")
    axes[0].set_ylabel("clients")
    axes[1].plot(t, [r["snapshots_per_s"] for r in series], color="tab:green")
    axes[1].set_ylabel("snapshots/s (all)")
    axes[2].plot(t, [nan if r["rtt_p50_ms"] is None else r["rtt_p50_ms"] for r in series],
                 label="p50")
    axes[2].plot(t, [nan if r["rtt_p99_ms"] is None else r["rtt_p99_ms"] for r in series],
                 label="p99")
    axes[2].set_ylabel("server RTT ms")
    axes[2].legend(loc="upper left")
    axes[3].plot(t, [r["bytes_in"] / 1024.0 for r in series], color="tab:purple",
                 label="KiB/s in")
    err = axes[3].twinx()
    err.bar(t, [r["errors"] for r in series], color="tab:red", alpha=0.4, label="errors")
    axes[3].set_ylabel("KiB/s in (snapshots)")
    err.set_ylabel("errors/s")
    err.set_ylim(0, max(1, *(r["errors"] for r in series)) * 1.1)
    axes[3].set_xlabel("seconds since start")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype to inline it


def render_html(report: dict) -> str:
    """A self-contained page: the result, the summary table, the charts, the series."""
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in report_rows(report))
    series = report["timeseries"]
    charts = _charts_svg(series) if series else "<p>No time series (nothing measured).</p>"
    head = "".join(f"<th>{c}</th>" for c in SERIES_COLUMNS)
    body = "\n".join("<tr>" + "".join(f"<td>{'' if r[c] is None else r[c]}</td>"
                                      for c in SERIES_COLUMNS) + "</tr>" for r in series)
    verdict = "PASS" if report["passed"] else "FAIL"
    title = f"tickwire bots: {verdict}, {report['clients_connected']} clients, {report['url']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f4f4f4; }}
.pass {{ color: #060; }} .fail {{ color: #a00; }}
svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1 class="{verdict.lower()}">{html.escape(title)}</h1>
<h2>Summary</h2>
<table id="summary">
{rows}
</table>
<h2>Per second</h2>
<div id="charts">{charts}</div>
<details><summary>Time series table</summary>
<table id="timeseries"><tr>{head}</tr>
{body}
</table></details>
</body></html>
"""
