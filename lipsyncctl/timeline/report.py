"""The QC report of one language: a JSON document and a self-contained HTML page (no external files:
the mouth strips are data URIs, the style is inline; the renders and sources are linked by relative URLs).

The page leads with the verdict (never OK for a run that is not lip-synced) and the run's provenance
(preset, lipsyncctl version, model fingerprints); each shot shows its mouth strips, its LSE-C / LSE-D
before and after (or why not measured), links to its render and source, and what to review."""

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


def _scores(shot: dict[str, Any], before: str, after: str) -> str:
    """``before -> after`` of one measure; "not measured" (the reason on hover) where a score is missing."""
    if shot.get(before) is None and shot.get(after) is None:
        note = html.escape(shot.get("sync_note") or "", quote=True)
        return f'<span class="na" title="{note}">not measured</span>'
    return f"{_cell(shot.get(before))} &rarr; {_cell(shot.get(after))}"


def relative_href(target: Path, start: Path) -> str:
    """A link from a page in the folder ``start`` to ``target``: a relative, percent-encoded URL (so the
    report's folder can be moved with what it links to), or a ``file://`` URL where none exists (another
    drive). Both paths are taken as given (made absolute, links not resolved), as a browser reads them."""
    import os
    import urllib.parse

    try:
        rel = os.path.relpath(Path(target).absolute(), Path(start).absolute())
    except ValueError:
        return Path(target).absolute().as_uri()
    return urllib.parse.quote(Path(rel).as_posix())


#: the page's verdict for ``report["verdict"]`` (:func:`lipsyncctl.timeline.qc.verdict`): never OK for a run
#: that is not lip-synced
VERDICTS = {"failed": "NEEDS ATTENTION", "not lip-synced": "NOT LIP-SYNCED", "review": "REVIEW", "ok": "OK"}


def _run_header(report: dict[str, Any]) -> str:
    """The run's provenance: preset, lipsyncctl version, each network's name and fingerprint, delivery."""
    models = "".join(
        f'<li data-role="{html.escape(m["role"])}">{html.escape(m["role"])}: <code>{html.escape(m["name"])}</code>'
        + (f' ({html.escape(m["config"])})' if m.get("config") else "")
        + (f' <code title="{html.escape(m["fingerprint"])}">{html.escape(m["fingerprint"][:16])}</code>'
           if m.get("fingerprint") else ' <span class="na">not installed</span>') + "</li>"
        for m in report.get("models") or [])
    return (f'<ul id="run"><li>preset: <code id="preset">{html.escape(str(report.get("preset")))}</code></li>'
            f'<li>lipsyncctl <span id="lipsyncctl-version">{html.escape(str(report.get("lipsyncctl")))}</span>'
            f'{", delivery " + html.escape(str(report["version"])) if report.get("version") else ""}</li>'
            f'{models}</ul>')


def render_html(report: dict[str, Any], thumbnails: dict[str, tuple[str, str]]) -> str:
    """The HTML page of ``report``; ``thumbnails`` maps shot id -> (source, lip-synced) mouth strips as data
    URIs (:mod:`lipsyncctl.timeline.qc`)."""
    s = report["summary"]
    lip_synced = report.get("lip_synced", True)
    rows = []
    for shot in report["shots"]:
        before, after = thumbnails.get(shot["id"], ("", ""))
        imgs = "".join(f'<figure><img alt="{html.escape(label)} mouth" src="{uri}"><figcaption>{label}</figcaption>'
                       f"</figure>" for label, uri in (("source", before), ("lip-synced", after)) if uri)
        strip = shot.get("mouth_strip") or {}
        if strip.get("frames"):
            imgs += f'<div class="na">frames {", ".join(str(f) for f in strip["frames"])} of the shot'
            imgs += f" &middot; {html.escape(strip['note'])}</div>" if strip.get("note") else "</div>"
        status = shot["status"] + (" (reused)" if shot.get("reused") else "")
        colour = STATUS_COLOURS.get(ShotStatus(shot["status"]), "#333")
        if shot["status"] == ShotStatus.DONE and not lip_synced:  # never a green badge for random weights
            status, colour = status + " (not lip-synced)", "#55606e"
        links = "".join(f'<br><a class="{cls}" href="{html.escape(href, quote=True)}">{label}</a>'
                        for cls, label, href in (("render-link", "render", shot.get("render_href")),
                                                 ("source-link", "source", shot.get("source_href"))) if href)
        review = "".join(f"<li>{html.escape(f)}</li>" for f in shot.get("review") or [])
        notes = [html.escape(w) for w in shot.get("warnings", [])]
        if shot.get("error"):
            notes.insert(0, "<b>" + html.escape(shot["error"]) + "</b>")
        rows.append(
            f'<tr data-status="{html.escape(shot["status"])}"><td>{html.escape(shot["id"])}{links}</td>'
            f'<td>{html.escape(shot["record_in"])}&ndash;{html.escape(shot["record_out"])}<br>'
            f'{shot["frames"]} fr</td><td class="mouth">{imgs}</td>'
            f'<td><span class="badge" style="background:{colour}">{html.escape(status)}</span></td>'
            f'<td>{_cell(shot.get("face_coverage"))}</td><td>{_cell(shot.get("no_face_frames"))}</td>'
            f'<td>{_cell(shot.get("speech_coverage"))}</td>'
            f'<td class="lse-c">{_scores(shot, "sync_before", "sync_after")}</td>'
            f'<td class="lse-d">{_scores(shot, "lse_d_before", "lse_d_after")}</td>'
            f'<td class="notes" data-review="{len(shot.get("review") or [])}">'
            f'{"<ul class=review>" + review + "</ul>" if review else ""}{"<br>".join(notes)}</td></tr>'
        )
    skipped = "".join(f"<li>{html.escape(k['name'])}: {html.escape(k['reason'])}</li>" for k in report["skipped"])
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    sync_note = _sync_note(report)
    title = f"Lip-sync QC &ndash; {html.escape(report['timeline_name'])} &ndash; {html.escape(report['language'])}"
    kind = report.get("verdict") or ("ok" if report["ok"] else "failed")
    verdict = VERDICTS.get(kind, kind.upper())
    if kind == "review":
        n = len(report.get("review") or [])
        verdict += f" {n} SHOT{'S' if n != 1 else ''}"
    banner = ""
    if not lip_synced:
        banner = (f'<p id="not-lip-synced" class="warn">NOT LIP-SYNCED: '
                  f'{html.escape(report.get("not_lip_synced") or "random networks")}</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;width:100%}}
th,td{{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top;font-size:.9em}}
.mouth figure{{margin:0 0 4px}} .mouth img{{display:block;border:1px solid #ccc}} .mouth figcaption{{font-size:.8em;color:#555}}
.badge{{color:#fff;padding:.15em .5em;border-radius:.6em;white-space:nowrap}} .review{{color:#a66a00;margin:0;padding-left:1.1em}}
.na{{color:#888}} .warn{{color:#b3261e;font-weight:600}} .notes{{max-width:28em}} #verdict{{font-size:1.4em;font-weight:700}} #verdict.ok{{color:#1b7f3b}} #verdict.bad{{color:#b3261e}}
#run{{list-style:none;padding:0;color:#444}}
</style></head><body>
<h1>{title}</h1>
<p id="verdict" class="{'ok' if kind == 'ok' else 'bad'}" data-verdict="{html.escape(kind)}">{verdict}</p>
{banner}
{_run_header(report)}
<p id="summary">{s['shots']} shots: {s['done']} lip-synced ({s['rendered']} rendered, {s['reused']} reused),
{s['failed']} failed, {s['no_face']} without a face, {s['no_dialogue']} without dialogue, {s['pending']} pending;
{s['skipped']} clips skipped. Dub: {html.escape(report['dub'])}.</p>
{sync_note}
<table id="shots"><thead><tr><th>shot</th><th>record</th><th>mouth: source / lip-synced</th><th>status</th>
<th>face coverage</th><th>no-face frames</th><th>speech</th><th>sync confidence (LSE-C) before &rarr; after</th>
<th>sync distance (LSE-D) before &rarr; after</th><th>to review / notes</th></tr></thead>
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
