"""The QC report of one language: a JSON document and a self-contained HTML page (no external files:
thumbnails are data URIs, the style is inline)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from lipsyncctl.timeline.types import ShotStatus

#: badge colour of each shot status (a reused shot shows as its status, "(reused)" added)
STATUS_COLOURS = {ShotStatus.DONE: "#1b7f3b", ShotStatus.NO_FACE: "#a66a00", ShotStatus.NO_DIALOGUE: "#55606e",
                  ShotStatus.FAILED: "#b3261e", ShotStatus.PENDING: "#55606e", ShotStatus.UNDER_MIN_SYNC: "#b3261e"}


def write_json(report: dict[str, Any], path: Path) -> Path:
    from lipsyncctl.media.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return path


def _sync_note(report: dict[str, Any]) -> str:
    """Where the sync scores come from, in one paragraph (a plain warning for unverified weights)."""
    if not report.get("sync_scores"):
        return ('<p id="sync-model" class="na">Sync confidence not measured: the evaluation SyncNet (syncnet-v2) '
                "is not installed (<code>lipsyncctl models fetch syncnet-v2</code>).</p>")
    model = report.get("sync_model") or {}
    note = html.escape(model.get("note") or "") + " " + _scale_note(report.get("sync_scale"))
    limit = f" Shots under --min-sync {report['min_sync']} fail." if report.get("min_sync") is not None else ""
    if model.get("verified"):
        return f'<p id="sync-model">Sync scores (higher LSE-C / lower LSE-D = better): {note}{limit}</p>'
    return (f'<p id="sync-model" class="warn" data-verified="false">Warning: these sync scores come from weights '
            f"that are not verified official ones. {note}{limit}</p>")


def _scale_note(scale: str | None) -> str:
    """Which measurement the scores come from (``report["sync_scale"]``)."""
    if scale == "official":
        return ('<span id="sync-scale" data-scale="official">Scale: official (S3FD face tracks and crop of '
                "LatentSync's eval/syncnet_detect.py; shots under 50 frames are not scored).</span>")
    return (f'<span id="sync-scale" data-scale="{html.escape(str(scale))}">Scale: approximate, NOT the official '
            "one (centred face box): not comparable with published LSE-C/LSE-D or the LSE-C &ge; 3 threshold; "
            "<code>lipsyncctl models fetch sfd-face</code> enables the official scale.</span>")


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def render_html(report: dict[str, Any], thumbnails: dict[str, tuple[str, str]]) -> str:
    """The HTML page of ``report``; ``thumbnails`` maps shot id -> (original, rendered) data URIs."""
    s = report["summary"]
    rows = []
    for shot in report["shots"]:
        before, after = thumbnails.get(shot["id"], ("", ""))
        imgs = "".join(f'<img alt="{html.escape(label)}" src="{uri}">' for label, uri in
                       (("original", before), ("lip-synced", after)) if uri)
        status = shot["status"] + (" (reused)" if shot.get("reused") else "")
        colour = STATUS_COLOURS.get(ShotStatus(shot["status"]), "#333")
        notes = [html.escape(w) for w in shot.get("warnings", [])]
        if shot.get("error"):
            notes.insert(0, "<b>" + html.escape(shot["error"]) + "</b>")
        rows.append(
            f'<tr data-status="{html.escape(shot["status"])}"><td>{html.escape(shot["id"])}</td>'
            f'<td>{html.escape(shot["record_in"])}&ndash;{html.escape(shot["record_out"])}<br>'
            f'{shot["frames"]} fr</td><td class="thumbs">{imgs}</td>'
            f'<td><span class="badge" style="background:{colour}">{html.escape(status)}</span></td>'
            f'<td>{_cell(shot.get("face_coverage"))}</td><td>{_cell(shot.get("no_face_frames"))}</td>'
            f'<td>{_cell(shot.get("speech_coverage"))}</td>'
            f'<td class="lse-c">{_cell(shot.get("sync_before"))} &rarr; {_cell(shot.get("sync_after"))}</td>'
            f'<td class="lse-d">{_cell(shot.get("lse_d_before"))} &rarr; {_cell(shot.get("lse_d_after"))}</td>'
            f'<td class="notes">{"<br>".join(notes)}</td></tr>'
        )
    skipped = "".join(f"<li>{html.escape(k['name'])}: {html.escape(k['reason'])}</li>" for k in report["skipped"])
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    sync_note = _sync_note(report)
    title = f"Lip-sync QC &ndash; {html.escape(report['timeline_name'])} &ndash; {html.escape(report['language'])}"
    verdict = "OK" if report["ok"] else "NEEDS ATTENTION"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;width:100%}}
th,td{{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top;font-size:.9em}}
.thumbs img{{height:90px;margin-right:4px;border:1px solid #ccc}} .badge{{color:#fff;padding:.15em .5em;border-radius:.6em}}
.na{{color:#888}} .warn{{color:#b3261e;font-weight:600}} .notes{{max-width:28em}} #verdict.ok{{color:#1b7f3b}} #verdict.bad{{color:#b3261e}}
</style></head><body>
<h1>{title}</h1>
<p id="verdict" class="{'ok' if report['ok'] else 'bad'}">{verdict}</p>
<p id="summary">{s['shots']} shots: {s['done']} lip-synced ({s['rendered']} rendered, {s['reused']} reused),
{s['failed']} failed, {s['no_face']} without a face, {s['no_dialogue']} without dialogue, {s['pending']} pending;
{s['skipped']} clips skipped. Dub: {html.escape(report['dub'])}.</p>
{sync_note}
<table id="shots"><thead><tr><th>shot</th><th>record</th><th>original / lip-synced</th><th>status</th>
<th>face coverage</th><th>no-face frames</th><th>speech</th><th>sync confidence (LSE-C) before &rarr; after</th>
<th>sync distance (LSE-D) before &rarr; after</th><th>notes</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Skipped clips</h2><ul id="skipped">{skipped or '<li class="na">none</li>'}</ul>
<h2>Warnings</h2><ul id="warnings">{warnings or '<li class="na">none</li>'}</ul>
<script>
// marks the page once every thumbnail has decoded (checked by a headless-browser test; harmless otherwise)
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-images-ok", imgs.filter(function (i) {{ return i.naturalWidth > 0; }}).length);
  document.body.setAttribute("data-images", imgs.length);
}});
</script>
</body></html>
"""


def write_html(report: dict[str, Any], thumbnails: dict[str, tuple[str, str]], path: Path) -> Path:
    from lipsyncctl.media.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(render_html(report, thumbnails), encoding="utf-8")
    return path
