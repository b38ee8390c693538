"""`report.html`: one self-contained page (inline CSS, SVG plots, images as data URIs).

It opens without network access: no scripts, fonts or images are fetched from anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from grader.domain.results import GradingReport, SubmissionResult
from grader.domain.submission import slugify

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 24px;
       color: #1d232a; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #d8dde3; padding-bottom: 4px; }
.meta { color: #5b6672; }
.plots { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; } figcaption { color: #5b6672; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e6e9ed;
         vertical-align: top; }
.passed { color: #1a7f37; } .failed, .error { color: #cf222e; } .skipped { color: #7d8590; }
.flag { background: #fff4d6; border-left: 4px solid #d4a72c; padding: 6px 10px; margin: 6px 0; }
.note { color: #5b6672; font-size: 12px; margin: 2px 0; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; max-height: 360px; }
.digits { display: flex; flex-wrap: wrap; gap: 10px; }
.digit { text-align: center; font-size: 12px; }
.digit img { width: 56px; height: 56px; image-rendering: pixelated; border: 1px solid #d8dde3; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6672; }
"""


def render_html(report: GradingReport) -> str:
    results = list(report.submissions.values())
    scores = [result.score for result in results]
    mean = sum(scores) / len(scores) if scores else 0.0
    max_score = max((result.max_score for result in results), default=0.0)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.started_at))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lab5-grader report: {escape(report.profile)} {escape(report.run_id)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Lab 5 grading report</h1>",
        f'<p class="meta">profile {escape(report.profile)} &middot; run {escape(report.run_id)} '
        f"&middot; {stamp} &middot; {len(results)} submissions &middot; mean score "
        f"{mean:.1f} of {max_score:g}</p>",
        '<section id="overview"><h2>Class overview</h2><div class="plots">',
        _figure("score-distribution", "Score distribution", _histogram(scores, max_score)),
        _figure("pass-rates", "Pass rate per check", _pass_rates(results)),
        "</div>",
        _summary_table(results),
        "</section>",
    ]
    parts += [_submission(result) for result in results]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figure(identifier: str, caption: str, svg: str) -> str:
    return (
        f'<figure class="plot" id="{identifier}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _histogram(scores: list[float], max_score: float, bins: int = 10) -> str:
    width, height, bottom = 420, 200, 24
    counts = [0] * bins
    for score in scores:
        ratio = score / max_score if max_score else 0.0
        counts[min(bins - 1, int(ratio * bins))] += 1
    tallest = max(counts) or 1
    bar = (width - 20) / bins
    body = []
    for index, count in enumerate(counts):
        bar_height = (height - bottom - 16) * count / tallest
        x = 10 + index * bar
        y = height - bottom - bar_height
        low = max_score * index / bins
        body.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{bar - 4:.1f}" '
            f'height="{bar_height:.1f}" fill="#4f7cac"><title>{count} with '
            f"{low:g}-{low + max_score / bins:g}</title></rect>"
        )
        if count:
            body.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                        f"{count}</text>")  # fmt: skip
        body.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - 8}" text-anchor="middle">{low:g}</text>'
        )
    return _svg(width, height, body, "histogram of scores")


def _pass_rates(results: list[SubmissionResult]) -> str:
    check_ids = list(dict.fromkeys(cid for result in results for cid in result.checks))
    row, label_width, width = 18, 170, 460
    height = row * len(check_ids) + 10
    body = []
    for index, check_id in enumerate(check_ids):
        graded = [r.checks[check_id] for r in results if check_id in r.checks]
        rate = sum(c.status == "passed" for c in graded) / len(graded) if graded else 0.0
        y = 5 + index * row
        bar = (width - label_width - 50) * rate
        body += [
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">{escape(check_id)}</text>',
            f'<rect x="{label_width}" y="{y + 2}" width="{width - label_width - 50}" '
            f'height="{row - 6}" fill="#e6e9ed"/>',
            f'<rect class="bar" x="{label_width}" y="{y + 2}" width="{bar:.1f}" '
            f'height="{row - 6}" fill="#1a7f37"/>',
            f'<text x="{width - 44}" y="{y + 12}">{rate:.0%}</text>',
        ]
    return _svg(width, height, body, "pass rate per check")


def _line_chart(values: list[float], color: str, label: str, fixed_top: float | None) -> str:
    width, height, pad = 320, 150, 28
    top = fixed_top if fixed_top is not None else max(values)
    top = top or 1.0
    step = (width - 2 * pad) / max(1, len(values) - 1)
    points = " ".join(
        f"{pad + i * step:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"
        for i, v in enumerate(values)
    )
    body = [
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#d8dde3"/>',
        f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>',
        f'<text x="{pad}" y="14">{escape(label)} (max {top:.3g})</text>',
        f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">{len(values)} points</text>',
    ]
    return _svg(width, height, body, label)


def _summary_table(results: list[SubmissionResult]) -> str:
    rows = [
        '<table class="summary"><tr><th>submission</th><th>student</th><th>score</th>'
        "<th>failed checks</th><th>flags</th></tr>"
    ]
    for result in results:
        failed = [c.check_id for c in result.checks.values() if c.status in ("failed", "error")]
        rows.append(
            f'<tr><td><a href="#sub-{slugify(result.submission_id)}">'
            f"{escape(result.submission_id)}</a></td>"
            f"<td>{escape(result.student_name or '')}</td>"
            f"<td>{result.score:g}/{result.max_score:g}</td>"
            f"<td>{escape(', '.join(failed)) or '-'}</td><td>{len(result.flags) or ''}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _submission(result: SubmissionResult) -> str:
    name = f" ({escape(result.student_name)})" if result.student_name else ""
    parts = [
        f'<section class="submission" id="sub-{slugify(result.submission_id)}">',
        f"<h2>{escape(result.submission_id)}{name}: {result.score:g}/{result.max_score:g}</h2>",
    ]
    parts += [f'<div class="flag">{escape(flag)}</div>' for flag in result.flags]
    parts += [f'<p class="note">{escape(note)}</p>' for note in result.notes]
    parts.append(
        '<table class="checks"><tr><th>check</th><th>status</th><th>points</th>'
        "<th>message</th></tr>"
    )
    for check in result.checks.values():
        parts.append(
            f'<tr><td>{escape(check.check_id)}</td><td class="{check.status}">{check.status}</td>'
            f"<td>{check.points:g}/{check.max_points:g}</td><td>{escape(check.message)}</td></tr>"
        )
    parts.append("</table>")
    for check in result.checks.values():
        if check.log_excerpt:
            parts.append(
                f"<details><summary>log: {escape(check.check_id)}</summary>"
                f"<pre>{escape(check.log_excerpt)}</pre></details>"
            )
    curve = result.training_curve
    if curve.get("loss") or curve.get("accuracy"):
        charts = []
        if curve.get("loss"):
            charts.append(_line_chart(curve["loss"], "#cf222e", "training loss", None))
        if curve.get("accuracy"):
            charts.append(_line_chart(curve["accuracy"], "#1a7f37", "test accuracy", 1.0))
        parts.append(
            '<figure class="training-curve"><div class="plots">' + "".join(charts)
            + "</div><figcaption>Training curve, parsed from the training log</figcaption>"
            "</figure>"
        )  # fmt: skip
    if result.wrong_digits:
        parts.append('<h3>Hidden digits it got wrong</h3><div class="digits">')
        parts += [
            f'<figure class="digit"><img class="wrong-digit" alt="hidden digit {d.index}" '
            f'src="data:image/png;base64,{d.png_base64}"><figcaption>true {d.label} &rarr; '
            f"{d.predicted}</figcaption></figure>"
            for d in result.wrong_digits
        ]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)
