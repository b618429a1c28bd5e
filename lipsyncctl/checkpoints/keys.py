"""Strict comparison of a checkpoint's tensor names and shapes with what a model expects.

Loading is always strict: every expected entry present, nothing unexpected, every shape equal. When it
fails, :class:`KeyReport` explains it in a few lines a user can act on (names grouped by pattern, so 224
missing motion-module tensors read as one line, not 224).
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lipsyncctl.errors import CheckpointError

Shape = tuple[int, ...]


def _shape(value: Any) -> Shape:
    shape = getattr(value, "shape", value)
    return tuple(int(s) for s in shape)


@dataclass(frozen=True)
class KeyReport:
    """Differences between expected and found state-dict entries.

    Attributes:
        missing: expected names absent from the checkpoint.
        unexpected: checkpoint names the model does not have.
        mismatched: ``(name, expected_shape, found_shape)`` for names present in both.
        num_expected / num_found: sizes of both name sets.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    num_expected: int = 0
    num_found: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 6) -> str:
        """What differs, in one line (parts separated by "; "); empty when :attr:`ok`."""
        if self.ok:
            return ""
        lines = [f"{self.num_found} tensors in the checkpoint, {self.num_expected} expected by the model"]
        if self.missing:
            lines.append(f"missing ({len(self.missing)}): {_grouped(self.missing, limit)}")
        if self.unexpected:
            lines.append(f"unexpected ({len(self.unexpected)}): {_grouped(self.unexpected, limit)}")
        if self.mismatched:
            shown = ", ".join(
                f"{n} {list(e)} expected, {list(f)} found" for n, e, f in self.mismatched[:limit]
            )
            more = f", and {len(self.mismatched) - limit} more" if len(self.mismatched) > limit else ""
            lines.append(f"shape mismatch ({len(self.mismatched)}): {shown}{more}")
        return "; ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [[n, list(e), list(f)] for n, e, f in self.mismatched],
        }


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def _grouped(names: Sequence[str], limit: int) -> str:
    """``down_blocks.*.motion_modules.*.… (224), conv_in.weight`` style summary of many names."""
    groups = Counter(_group_key(n) for n in names)
    parts = []
    for key, count in groups.most_common(limit):
        if count == 1:
            parts.append(next(n for n in names if _group_key(n) == key))
        else:
            parts.append(f"{key} ({count})")
    rest = len(groups) - limit
    return ", ".join(parts) + (f", and {rest} more groups" if rest > 0 else "")


def _group_key(name: str) -> str:
    # Group by the pattern of the first three components: 'down_blocks.*.motion_modules.*' etc.
    pat = _pattern(name).split(".")
    head = []
    for part in pat:
        head.append(part)
        if len([p for p in head if p != "*"]) >= 2 and len(head) >= 3:
            break
    return ".".join(head) + (".…" if len(head) < len(pat) else "")


def compare_state_dict(
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    ignore_missing: Iterable[str] = (),
) -> KeyReport:
    """Compare names and shapes (values may be tensors or shapes).

    Args:
        expected: what the model's ``state_dict()`` holds (tensors, meta tensors or shapes).
        found: what the checkpoint holds.
        ignore_missing: glob patterns of expected names that may be absent (e.g. BatchNorm
            ``*.num_batches_tracked`` in very old files; the model keeps its default).
    """
    patterns = list(ignore_missing)
    missing = [
        k for k in expected if k not in found and not any(fnmatch.fnmatchcase(k, p) for p in patterns)
    ]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        (k, _shape(v), _shape(found[k])) for k, v in expected.items() if k in found and _shape(v) != _shape(found[k])
    ]
    return KeyReport(missing, unexpected, mismatched, len(expected), len(found))


def check_state_dict(
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    what: str,
    source: object,
    ignore_missing: Iterable[str] = (),
    hint: str | None = None,
) -> KeyReport:
    """Like :func:`compare_state_dict`, but raise :class:`CheckpointError` unless it matches exactly.

    Args:
        what: the model, for the message (``"UNet (stage2)"``).
        source: the file, for the message.
        hint: overrides the guessed hint.
    """
    report = compare_state_dict(expected, found, ignore_missing=ignore_missing)
    if not report.ok:
        raise CheckpointError(
            f"{source} does not match {what}: {report.summary()}",
            hint=hint or guess_hint(report),
        )
    return report


def guess_hint(report: KeyReport) -> str:
    """A likely cause for common mismatches (wrong config, foreign prefix, wrong file)."""
    mm = [n for n in report.missing if ".motion_modules." in n]
    um = [n for n in report.unexpected if ".motion_modules." in n]
    if mm and len(mm) == len(report.missing) and not report.unexpected:
        return (
            "the checkpoint has no (or fewer) motion modules than the config: use config stage1 for a "
            "v1.0/stage-1 UNet (tiny_stage1 for a tiny one), stage2_efficient when only the decoder has them"
        )
    if um and len(um) == len(report.unexpected) and not report.missing:
        return "the checkpoint has motion modules the config lacks: use config stage2 (v1.5) or stage2_512 (v1.6)"
    if report.unexpected and report.missing:
        prefixes = {n.split(".", 1)[0] for n in report.unexpected}
        if len(prefixes) == 1 and len(report.unexpected) == report.num_found:
            (prefix,) = prefixes
            return f"every name starts with '{prefix}.': the file may wrap another model; check it with `lipsyncctl models info FILE`"
        if len(report.missing) == report.num_expected:
            return "no name matches: this is probably a checkpoint of another model; check it with `lipsyncctl models info FILE`"
    if report.mismatched and not report.missing and not report.unexpected:
        return "same names, different sizes: the architecture config does not match the checkpoint (e.g. wrong syncnet config)"
    return "run `lipsyncctl models info FILE` to see what the file holds, and `lipsyncctl models verify`"
