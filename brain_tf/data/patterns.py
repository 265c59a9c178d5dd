"""File-name patterns with named fields, e.g. ``images/sub-{subject}_T1w.nii.gz``.

A field is ``{name}`` (any run of characters without ``/``) or
``{name:REGEX}``. A field used twice must have the same value both times.
A pattern turns into a glob (to list candidate files), a regular expression
(to read the fields from a path) and a template (to build a sibling path from
the fields, e.g. the label map of an image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_FIELD_REGEX = r"[^/]+?"


@dataclass(frozen=True)
class Pattern:
    text: str

    def _parts(self):
        """Split into ('lit', text) and ('field', name, regex) parts."""
        parts, i, text = [], 0, self.text
        while i < len(text):
            j = text.find("{", i)
            if j < 0:
                parts.append(("lit", text[i:]))
                break
            if j > i:
                parts.append(("lit", text[i:j]))
            depth, k = 1, j + 1
            while k < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[k], 0)
                k += 1
            if depth:
                raise ValueError(f"pattern {text!r}: unclosed '{{'")
            body = text[j + 1 : k - 1]
            name, _, regex = body.partition(":")
            if not name.isidentifier():
                raise ValueError(f"pattern {text!r}: bad field name {name!r}")
            parts.append(("field", name, regex or DEFAULT_FIELD_REGEX))
            i = k
        return parts

    @property
    def fields(self) -> list[str]:
        seen = []
        for p in self._parts():
            if p[0] == "field" and p[1] not in seen:
                seen.append(p[1])
        return seen

    def glob(self) -> str:
        return "".join(p[1] if p[0] == "lit" else "*" for p in self._parts())

    def regex(self) -> re.Pattern:
        out, seen = [], set()
        for p in self._parts():
            if p[0] == "lit":
                out.append(re.escape(p[1]))
            elif p[1] in seen:
                out.append(f"(?P={p[1]})")
            else:
                seen.add(p[1])
                out.append(f"(?P<{p[1]}>{p[2]})")
        return re.compile("".join(out) + r"\Z")

    def match(self, relpath: str) -> dict | None:
        m = self.regex().match(relpath)
        return m.groupdict() if m else None

    def format(self, fields: dict) -> str:
        out = []
        for p in self._parts():
            if p[0] == "lit":
                out.append(p[1])
            else:
                if p[1] not in fields:
                    raise KeyError(p[1])
                out.append(str(fields[p[1]]))
        return "".join(out)
