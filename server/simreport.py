"""``tickwire sim --html``: one self-contained HTML file with the balance report's charts.

The charts are drawn with matplotlib's ``Figure`` (no pyplot: no global state, no display)
and embedded as PNG data
URIs, so the file can be mailed or attached to a review as it is:

* time alive: the distribution of every ended life (spawn or respawn to death, seconds)
  pooled over the seeds, one outline per file, with each file's mean;
* kills per player: the distribution of each player's kills pooled over the seeds;
* with ``--against``: each metric's difference candidate - base as a percentage of the
  base mean, with its 95 % interval; significant differences in a strong colour.

The summary table beside them is the same as the text report. Every string from the
report goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["render_html"]

_COLORS = {"candidate": "#d9480f", "base": "#1c7ed6"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _sides(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, report[name]) for name in ("candidate", "base") if name in report]


def _pooled(side: dict[str, Any], field: str) -> np.ndarray:
    return np.array([v for run in side["runs"] for v in run[field]], dtype=np.float64)


def _time_alive_chart(report: dict[str, Any]) -> str:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    data = {name: _pooled(side, "lives_s") for name, side in _sides(report)}
    every = np.concatenate(list(data.values()))
    bins = np.histogram_bin_edges(every, bins=30) if every.size else np.linspace(0, 1, 2)
    for name, lives in data.items():
        if lives.size:
            ax.hist(lives, bins=bins, histtype="step", linewidth=2, color=_COLORS[name],
                    label=f"{name} (n={lives.size}, mean {lives.mean():.1f} s)")
            ax.axvline(lives.mean(), color=_COLORS[name], linestyle="--", linewidth=1)
    if not every.size:
        ax.text(0.5, 0.5, "no player died", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time alive: spawn or respawn to death (s)")
    ax.set_ylabel("lives")
    ax.set_title("Time alive (ended lives, all seeds)")
    if every.size:
        ax.legend()
    return _png(fig)


def _kills_chart(report: dict[str, Any]) -> str:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    data = {name: _pooled(side, "kills_per_player") for name, side in _sides(report)}
    top = int(max((d.max() for d in data.values() if d.size), default=0))
    bins = np.arange(-0.5, top + 1.5, 1.0)
    for name, kills in data.items():
        ax.hist(kills, bins=bins, histtype="step", linewidth=2, color=_COLORS[name],
                label=f"{name} (mean {kills.mean():.2f})" if kills.size else name)
    ax.set_xlabel("kills (players and NPCs) by one player in one run")
    ax.set_ylabel("players × seeds")
    ax.set_title("Kills per player")
    ax.legend()
    return _png(fig)


def _comparison_chart(report: dict[str, Any]) -> str | None:
    rows = []
    for metric, meta in report["metrics"].items():
        c = report["comparison"][metric]
        base_mean = report["base"]["summary"][metric]["mean"]
        if c["diff"] is None or c["ci95"] is None or not base_mean:
            continue  # no interval, or no base to be a percentage of
        scale = 100.0 / abs(base_mean)
        rows.append((meta["label"], c["diff"] * scale, c["ci95"][0] * scale,
                     c["ci95"][1] * scale, c["significant"]))
    if not rows:
        return None
    fig = Figure(figsize=(7.2, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, (_label, diff, lo, hi, sig) in zip(y, rows, strict=True):
        color = _COLORS["candidate"] if sig else "#868e96"
        ax.errorbar(diff, yi, xerr=[[diff - lo], [hi - diff]], fmt="o", color=color,
                    capsize=4, linewidth=2 if sig else 1)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(y, [r[0] + (" *" if r[4] else "") for r in rows])
    ax.set_xlabel("candidate - base, % of the base mean (95% CI)")
    ax.set_title("A/B: * = significant (Welch's t-test, p < 0.05)")
    return _png(fig)


def _table(report: dict[str, Any]) -> str:
    has_base = "base" in report
    head = "<tr><th>metric</th><th>candidate</th>"
    head += "<th>base</th><th>difference</th><th>p</th></tr>" if has_base else "</tr>"

    def cell(summary: dict[str, Any]) -> str:
        if summary["mean"] is None:
            return "n/a"
        ci = summary["ci95"]
        return f"{summary['mean']:,.3f}" + (f" [{ci[0]:,.3f}, {ci[1]:,.3f}]" if ci else "")

    body = []
    for metric, meta in report["metrics"].items():
        unit = f" ({meta['unit']})" if meta["unit"] else ""
        tds = [meta["label"] + unit, cell(report["candidate"]["summary"][metric])]
        cls = ""
        if has_base:
            c = report["comparison"][metric]
            tds.append(cell(report["base"]["summary"][metric]))
            if c["diff"] is None:
                tds += ["n/a", "n/a"]
            else:
                ci = c["ci95"]
                tds.append(f"{c['diff']:+,.3f}"
                           + (f" [{ci[0]:+,.3f}, {ci[1]:+,.3f}]" if ci else ""))
                tds.append("n/a" if c["p"] is None else f"{c['p']:.3g}")
            cls = ' class="sig"' if c["significant"] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(t)}</td>" for t in tds)
                    + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def render_html(report: dict[str, Any]) -> str:
    """The report (``simrunner.build_report``) as one HTML page with embedded charts."""
    cfg = report["config"]
    esc = html.escape
    files = f"candidate: <code>{esc(str(report['candidate']['file']))}</code>"
    if "base" in report:
        files += f" &nbsp; base: <code>{esc(str(report['base']['file']))}</code>"
    changed = report.get("params_changed") or {}
    changed_html = "".join(
        f"<li><code>{esc(k)}</code>: {esc(str(v['base']))} → {esc(str(v['candidate']))}</li>"
        for k, v in changed.items())
    charts = [("Time alive", _time_alive_chart(report)),
              ("Kills per player", _kills_chart(report))]
    if "comparison" in report:
        chart = _comparison_chart(report)
        if chart:
            charts.append(("A/B comparison", chart))
    figures = "".join(f'<figure><img alt="{esc(title)}" src="{src}"><figcaption>'
                      f"{esc(title)}</figcaption></figure>" for title, src in charts)
    seeds = cfg["seeds"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickwire sim report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212529; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border-bottom: 1px solid #dee2e6; padding: 4px 10px; text-align: left; }}
td:not(:first-child) {{ font-variant-numeric: tabular-nums; }}
tr.sig td {{ font-weight: 600; }}
figure {{ display: inline-block; margin: 8px; }}
</style></head><body>
<h1>tickwire sim report</h1>
<p>{files}</p>
<p>{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), {cfg['players']} {esc(cfg['behavior'])}
players, {cfg['ticks']} ticks each. Each cell: mean over seeds [95% confidence interval].
Bold rows: the difference is significant (Welch's t-test, p &lt; 0.05).</p>
{f"<p>Parameters that differ:</p><ul>{changed_html}</ul>" if changed_html else ""}
{_table(report)}
{figures}
</body></html>
"""
