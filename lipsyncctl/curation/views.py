"""The views of a curated dataset, rebuilt from the records on every run (step 4 of the job):

- ``manifest.jsonl``: one line per span (source, exact frames and seconds, decision, the clip stages'
  summaries, its ``split``);
- ``train.txt`` / ``val.txt``: the official fileslist format (one aligned clip path per line) of the kept
  clips that have an aligned video;
- ``report.json`` and a self-contained ``report.html``: counts per stage and reason, kept hours, score
  histograms of the numeric fields the stages report, and thumbnails of rejected spans (the first
  :data:`THUMBNAILS` by id: each span's first frame as an inline JPEG with its stage, reason and value;
  read from the sources when the views are written, one frame at a time; a source that is gone or no
  longer decodes just has none);
- ``curate.yaml``: the tool, the stage versions and the resolved ``curate`` settings.

The split is decided per **group** (the source, or its parent folder: the speaker in VoxCeleb2-style
trees), from a hash of the group's name and ``curate.split_seed``: the same data always splits the same
way, a new source never moves an old one, and no speaker is in both sets.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import itertools
import json
import os
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from lipsyncctl.config import CurateOptions
from lipsyncctl.curation.decide import PLACE
from lipsyncctl.media.thumbnails import thumbnail_uri

if TYPE_CHECKING:
    pass

#: rejected spans shown with a thumbnail in ``report.html`` (the first ones by id)
THUMBNAILS = 24
#: longer side of a thumbnail, px
THUMBNAIL_SIDE = 160
#: sources not kept listed in ``report.html`` (the first by id; report.json lists every one)
SOURCE_ROWS = 200


def split_of(group: str, options: CurateOptions) -> str:
    """``"val"`` for a ``curate.val_fraction`` share of the groups, else ``"train"`` (deterministic)."""
    digest = hashlib.sha256(f"{options.split_seed}:{group}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < options.val_fraction else "train"


def split_group(source_id: str, source_path: str, options: CurateOptions) -> str:
    """The unit that is never split across train and val: the source, or the name of its parent folder
    (``split_by=parent``) or of the folder above that (``grandparent``)."""
    up = {"parent": 1, "grandparent": 2}.get(options.split_by, 0)
    folder = source_path
    for _ in range(up):  # string operations: pathlib interns every part of every path (~0.1 KB a source at 20k)
        folder = os.path.dirname(folder)
    return (os.path.basename(folder) if up else "") or source_id


def split_warning(folders: Mapping[Any, int], options: CurateOptions) -> str | None:
    """Said when the split is by source and most sources share their folder with others in a dataset of several
    such folders (VoxCeleb2's ``idNNNNN/VIDEO/00001.mp4``: each utterance a source; a folder per speaker): clips of
    one video or speaker then land in both train and val, and the held-out loss flatters the model. Not for one
    flat folder of sources (HDTF, ``raw/*.mp4``): the folders say nothing there, and a split per folder would put
    every clip on one side. ``folders``: the number of sources in each folder (by any key)."""
    total = sum(folders.values())
    if options.split_by != "source" or not options.val_fraction or total < 4:
        return None
    shared = sum(n for n in folders.values() if n > 1)
    if shared * 2 < total or sum(n > 1 for n in folders.values()) < 2:
        return None
    return (f"{shared} of {total} sources share their folder with other sources, and the split is per "
            "source: clips of one video or speaker can be in both train and val (a held-out loss that flatters); "
            "--set curate.split_by=parent keeps a folder's sources on one side (grandparent: the folder above, "
            "VoxCeleb2's speaker)")


@contextlib.contextmanager
def text_files(paths: Sequence[Path]) -> Iterator[list[TextIO]]:
    """Text files written under temporary names beside ``paths`` (a line at a time, say), renamed into place
    together when the block succeeds; on any exception (Ctrl-C included) the temporary files are removed and
    the files of before stay as they were."""
    from lipsyncctl.media.atomic import temp_path

    temps = [temp_path(p, keep_suffix=False) for p in paths]
    try:
        with contextlib.ExitStack() as stack:
            # (a source's name that is not UTF-8 is written as its own bytes)
            yield [stack.enter_context(t.open("w", encoding="utf-8", errors="surrogateescape")) for t in temps]
        for tmp, path in zip(temps, paths, strict=True):
            tmp.replace(path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def measured(line: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric fields of a manifest line that the clip stages measured (sync confidence, quality, ...)."""
    for k, v in line.items():
        if k not in PLACE and isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, float(v)


def histograms(values: dict[str, Sequence[float]] | Iterable[dict[str, Any]],
               bins: int = 10) -> dict[str, dict[str, Any]]:
    """Per numeric manifest field of the clip stages (:func:`measured`): counts in ``bins`` equal bins between its
    minimum and maximum. ``values``: field -> values (gathered while the lines were written), or the lines."""
    if not isinstance(values, dict):
        gathered: dict[str, array[float]] = {}
        for line in values:
            for k, v in measured(line):
                gathered.setdefault(k, array("d")).append(v)
        values = gathered
    out = {}
    for k, vs in sorted(values.items()):
        lo, hi = min(vs), max(vs)
        width = (hi - lo) / bins or 1.0
        counts = [0] * bins
        for v in vs:
            counts[min(bins - 1, int((v - lo) / width))] += 1
        out[k] = {"min": lo, "max": hi, "counts": counts}
    return out


def reject_thumbnails(lines: list[dict[str, Any]], paths: dict[str, str], fps: int,
                      limit: int = THUMBNAILS) -> list[dict[str, Any]]:
    """Thumbnails of the first ``limit`` rejected spans of ``lines`` (manifest lines, sorted by id): each
    span's first frame on the ``fps`` grid of its source (``paths``: source id -> file), with the
    decision's stage, reason and value. Sources are read one at a time, one frame in memory at a time;
    a source that is gone or no longer decodes is left out (the report is still written without it)."""
    from lipsyncctl.errors import MediaError
    from lipsyncctl.media.reader import IndexedReader

    rejected = [line for line in lines if line["decision"]["verdict"] == "rejected"][:limit]
    out = []
    for source, group in itertools.groupby(rejected, key=lambda line: line["source"]):
        path = paths.get(source)
        if not path or not Path(path).is_file():
            continue
        try:
            with IndexedReader(path, Fraction(fps)) as reader:
                for line in group:
                    rgb = reader.read([line["first"]]).get(line["first"])
                    if rgb is None:
                        continue
                    d = line["decision"]
                    out.append({"id": line["id"], "stage": d.get("stage"), "reason": d.get("reason"),
                                "value": d.get("value"), "image": thumbnail_uri(rgb, max_side=THUMBNAIL_SIDE)})
        except (MediaError, OSError):
            continue  # changed or damaged since it was curated: its spans go without a picture
    return out


def report_html(report: dict[str, Any], thumbnails: list[dict[str, Any]] | None = None, *,
                sources_not_kept: int | None = None) -> str:
    """A self-contained page (inline style, images as data URIs, no external files). ``thumbnails``:
    :func:`reject_thumbnails`; ``sources_not_kept``: how many there are, when ``report["sources"]`` lists the first
    ones only."""
    counts = report["counts"]
    esc = html.escape

    def table(title: str, rows: dict[str, Any]) -> str:
        body = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in rows.items())
        return f"<h2>{esc(title)}</h2><table>{body or '<tr><td>none</td></tr>'}</table>"

    def bars(name: str, h: dict[str, Any]) -> str:
        top = max(h["counts"]) or 1
        rects = "".join(f'<rect x="{i * 22}" y="{60 - 58 * c / top:.1f}" width="20" height="{58 * c / top:.1f}">'
                        f"<title>{c}</title></rect>" for i, c in enumerate(h["counts"]))
        return (f"<h3>{esc(name)} ({h['min']:.3g} .. {h['max']:.3g})</h3>"
                f'<svg width="{22 * len(h["counts"])}" height="60" class="hist">{rects}</svg>')

    rejected_sources = [s for s in report["sources"] if s["standing"] != "kept"]
    src_rows = "".join(
        f"<tr><td>{esc(s['path'])}</td><td>{esc(s['standing'])}</td>"
        f"<td>{esc(str(s['decision'].get('stage', '')))}</td>"
        f"<td>{esc(str(s['decision'].get('reason') or s['decision'].get('error') or ''))}</td></tr>"
        for s in rejected_sources)

    def figure(t: dict[str, Any]) -> str:
        what = f"{t['stage']}/{t['reason']}" + ("" if t["value"] is None else f" = {t['value']}")
        return (f'<figure><img src="{t["image"]}" alt="{esc(t["id"])}">'
                f"<figcaption><b>{esc(what)}</b><br><code>{esc(t['id'])}</code></figcaption></figure>")

    more = (f" ({len(rejected_sources)} shown of {sources_not_kept}, by id; report.json lists every one)"
            if sources_not_kept is not None and sources_not_kept > len(rejected_sources) else "")
    rejected_spans = counts["clips"].get("rejected", 0)
    thumbs = (f"<h2>Rejected spans ({len(thumbnails)} shown of {rejected_spans}, by id)</h2>"
              f'<div class="thumbs">{"".join(figure(t) for t in thumbnails)}</div>' if thumbnails else "")
    pending = f" ({counts['pending']} not measured by every stage yet)" if counts.get("pending") else ""
    warned = "".join(f'<p class="warning"><b>Warning:</b> {esc(w)}</p>' for w in report.get("warnings", []))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lipsyncctl curate report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0}}
td{{border:1px solid #ccc;padding:3px 8px}}.hist rect{{fill:#3b6ea5}}h2{{margin-top:1.5em}}
.thumbs{{display:flex;flex-wrap:wrap;gap:10px}}figure{{margin:0;width:{THUMBNAIL_SIDE}px;font-size:12px}}
figure img{{display:block;max-width:100%}}code{{word-break:break-all}}.warning{{background:#fff3cd;padding:4px 8px}}</style></head>
<body><h1>Curated dataset</h1>
{warned}<p>Kept: <b id="kept-hours">{counts['kept_seconds'] / 3600:.3f} h</b> ({counts['kept_seconds']:.1f} s) in
{counts['clips'].get('kept', 0)} clips{pending}; split {esc(json.dumps(report.get('split', {})))}. Stages run: up to
<code>{esc(report['until'])}</code>.</p>
{table("Sources", counts["sources"])}{table("Spans", counts["clips"])}
{table("Rejected, by stage/reason", counts["rejected"])}{table("Failed, by stage", counts.get("failed", {}))}
<h2>Scores</h2>{''.join(bars(k, h) for k, h in report.get('histograms', {}).items()) or '<p>none measured yet</p>'}
{thumbs}
<h2>Sources not kept{esc(more)}</h2><table><tr><td>source</td><td>verdict</td><td>stage</td><td>reason</td></tr>{src_rows}</table>
</body></html>
"""
