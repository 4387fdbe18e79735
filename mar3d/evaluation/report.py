"""What `mar3d evaluate` writes: per-object CSV and JSON, a terminal table, and an HTML report with renders."""
from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np

from mar3d.evaluation.metrics import THRESHOLDS, metric_names
from mar3d.utils import atomic

CSV_FILE = "metrics.csv"
JSON_FILE = "metrics.json"
HTML_FILE = "report.html"
# (column title, metric key) of the short tables: the headline numbers.
HEADLINE = [("CD", "cd")] + [(f"F@{t:g}", f"f_score@{t:g}") for t in THRESHOLDS] + [("NC", "nc")]


def columns(records: list[dict]) -> list[str]:
    """Metric keys present in ``records``, in report order."""
    present = {k for r in records if r["status"] == "ok" for k in r["metrics"]}
    return [k for k in metric_names() if k in present] + sorted(present - set(metric_names()))


def headline(records: list[dict]) -> list[tuple[str, str]]:
    has_iou = any("volume_iou" in r.get("metrics", {}) for r in records)
    return HEADLINE + ([("IoU", "volume_iou")] if has_iou else [])


def mean_metrics(records: list[dict]) -> dict[str, float]:
    """Mean of each metric over the evaluated objects."""
    ok = [r["metrics"] for r in records if r["status"] == "ok"]
    return {k: float(np.mean([m[k] for m in ok])) for k in columns(records)} if ok else {}


def write_csv(path: Path, records: list[dict]) -> None:
    names = columns(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "gt_id", "status", "alignment", "view", "rotation_deg", *names, "seconds", "pred", "gt",
                     "reason"])
    for r in records:
        metrics = r.get("metrics", {})
        writer.writerow([r["id"], r["gt_id"], r["status"], r.get("alignment", ""), r.get("view", ""),
                         r.get("rotation_deg", ""), *(f"{metrics[k]:.6g}" if k in metrics else "" for k in names),
                         r["seconds"]["total"], r["pred"], r["gt"], r["reason"]])
    atomic.write_bytes(path, buffer.getvalue().encode())


def write_json(path: Path, records: list[dict], protocol: dict, unmatched: dict[str, list[str]]) -> None:
    ok = sum(r["status"] == "ok" for r in records)
    atomic.write_json(path, {
        "protocol": protocol,
        "summary": {"evaluated": ok, "failed": len(records) - ok, "mean": mean_metrics(records)},
        "objects": records,
        "unmatched": unmatched,
    })


def summary_table(records: list[dict]) -> str:
    """Fixed-width table of the evaluated objects and their mean, for the terminal."""
    cols = headline(records)
    ok = [r for r in records if r["status"] == "ok"]
    width = max([len(r["id"]) for r in ok] + [12])
    lines = [f"{'id':<{width}}" + "".join(f"{title:>9}" for title, _ in cols) + f"{'rot°':>8}{'s':>7}"]
    for r in ok:
        lines.append(f"{r['id']:<{width}}" + "".join(f"{r['metrics'][key]:>9.4f}" for _, key in cols)
                     + f"{r['rotation_deg']:>8.1f}{r['seconds']['total']:>7.1f}")
    if ok:
        mean = mean_metrics(records)
        lines.append(f"{f'mean ({len(ok)})':<{width}}" + "".join(f"{mean[key]:>9.4f}" for _, key in cols))
    return "\n".join(lines)


def _image_tag(path: Path) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_html(path: Path, records: list[dict], protocol: dict, unmatched: dict[str, list[str]],
               renders: Path) -> None:
    """A self-contained page: the protocol, the mean, and per object its numbers and normal-map renders."""
    cols = headline(records)
    mean = mean_metrics(records)
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    e = html.escape
    head = "".join(f"<th>{e(title)}</th>" for title, _ in cols)
    rows = []
    for r in ok:
        cells = "".join(f"<td>{r['metrics'][key]:.4f}</td>" for _, key in cols)
        rows.append(f"<tr><td>{e(r['id'])}</td>{cells}<td>{e(r['alignment'])} {r['rotation_deg']:.1f}°</td>"
                    f"<td>{_image_tag(renders / (r['id'] + '.png'))}</td></tr>")
    mean_row = "".join(f"<td>{mean[key]:.4f}</td>" for _, key in cols) if mean else ""
    problems = [f"<li>{e(r['id'])}: {e(r['file'] + ': ' if r['file'] else '')}{e(r['reason'])}</li>" for r in failed]
    problems += [f"<li>prediction {e(i)}: no ground truth with this id</li>" for i in unmatched["predictions"]]
    settings = ", ".join(f"{e(k)} = {e(str(v))}" for k, v in protocol.items())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mar3d evaluate</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:middle}} img{{display:block}}</style>
</head><body>
<h1>Shape evaluation</h1>
<p>{settings}</p>
<h2>Mean over {len(ok)} object(s)</h2>
<table><tr>{head}</tr><tr>{mean_row}</tr></table>
{f"<h2>Not evaluated</h2><ul>{''.join(problems)}</ul>" if problems else ""}
<h2>Objects</h2>
<p>Normal maps in the prediction's frame: prediction | ground truth, from the front, then from the side.</p>
<table><tr><th>id</th>{head}<th>alignment</th><th>pred | gt (front), pred | gt (side)</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    atomic.write_bytes(path, page.encode())
