"""The QC report of a BIDS App run: ``OUTPUT_DIR/report.html``.

One row per image: a small PNG of its mid-planes (the image in grey, tissue labels in
colour, the brain-mask outline in red; written at participant level beside the
derivatives), its volumes and QC values, the status of failed images, and the cohort
outliers: a value whose robust z-score (0.6745 (x - median) / MAD over the images
that finished, when there are :data:`MIN_COHORT` or more) is beyond :data:`OUTLIER_Z`
is marked, and a row is flagged when a value
is marked or the tissue prediction's own QC flag is set. Any column header sorts the
table (a few lines of inline JavaScript: no CDN, no server); a summary plot shows the
volumes against age where ages are known. The page opens offline in any browser.

Opened as ``report.html#selftest`` the page checks itself once loaded (every image
decoded, a header click sorts the table) and writes the result into
``<pre id="selftest">``; the tests read it back from headless Chromium.
"""

from __future__ import annotations

import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from brain_tf.io.atomic import atomic_path, write_text

#: |robust z| above this marks an outlier (Iglewicz and Hoaglin's 3.5).
OUTLIER_Z = 3.5
#: Outliers are looked for among at least this many finished images (a median and MAD
#: of fewer say little).
MIN_COHORT = 5
TISSUE_COLOURS = ((0.2, 0.6, 1.0), (1.0, 0.55, 0.1), (0.95, 0.95, 0.3))  # CSF, GM, WM


def robust_z(values: pd.Series) -> pd.Series:
    """0.6745 (x - median) / MAD; 0 where the MAD is 0, NaN where x is missing."""
    x = pd.to_numeric(values, errors="coerce")
    median = x.median()
    mad = (x - median).abs().median()
    if not np.isfinite(mad) or mad == 0:
        return x.where(x.isna(), 0.0)
    return 0.6745 * (x - median) / mad


def measure_columns(table: pd.DataFrame) -> list[str]:
    """The numeric per-image measures outliers are looked for in."""
    return [c for c in table.columns
            if (c.endswith("_ml") or c.endswith("_fraction") or c.startswith("qc_")
                or c.startswith("predicted_")) and c != "qc_flag"
            and pd.api.types.is_numeric_dtype(table[c])]


def flag_outliers(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``outliers`` (the columns beyond :data:`OUTLIER_Z`, ``;``-joined)
    and ``flagged`` (an outlier, a QC flag, or a failure)."""
    table = table.copy()
    ok = table["status"] == "ok" if "status" in table else pd.Series(True, table.index)
    marks = pd.Series([[] for _ in range(len(table))], index=table.index)
    for column in measure_columns(table) if ok.sum() >= MIN_COHORT else ():
        z = robust_z(table.loc[ok, column])
        for i in z.index[z.abs() > OUTLIER_Z]:
            marks[i] = marks[i] + [column]
    table["outliers"] = marks.map(";".join)
    qc_flag = table["qc_flag"].map(_truthy) if "qc_flag" in table else False
    table["flagged"] = (marks.map(bool) | qc_flag | ~ok).astype(bool)
    return table


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "ok", "none", "n/a")
    return bool(value) and not (isinstance(value, float) and np.isnan(value))


def _mid_planes(array: np.ndarray) -> list[np.ndarray]:
    """Sagittal, coronal and axial mid-planes of a RAS+ volume, rotated for display."""
    x, y, z = (s // 2 for s in array.shape[:3])
    return [np.rot90(array[x]), np.rot90(array[:, y]), np.rot90(array[:, :, z])]


def overlay_png(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, path,
                spacing=(1.0, 1.0, 1.0), height_px: int = 120) -> Path:
    """A small PNG of the three mid-planes: ``image`` in grey, ``labels`` (1-3) in colour,
    the outline of ``mask`` in red; all three arrays in RAS+ voxel order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sx, sy, sz = (float(s) for s in spacing)
    aspects = [sz / sy, sz / sx, sy / sx]  # pixel height / width of each plane
    planes = list(zip(_mid_planes(image), _mid_planes(labels), _mid_planes(mask)))
    widths = [p[0].shape[1] / (p[0].shape[0] * a) for p, a in zip(planes, aspects)]
    dpi = 100
    fig, axes = plt.subplots(1, 3, figsize=(height_px * sum(widths) / dpi, height_px / dpi),
                             dpi=dpi, gridspec_kw={"width_ratios": widths, "wspace": 0.02})
    fig.subplots_adjust(0, 0, 1, 1)
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)
    cmap = ListedColormap([(0, 0, 0, 0)] + [c + (0.45,) for c in TISSUE_COLOURS])
    for ax, (img, lab, msk), aspect in zip(axes, planes, aspects):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.imshow(np.clip(lab, 0, 3), cmap=cmap, vmin=-0.5, vmax=3.5, aspect=aspect,
                  interpolation="nearest")
        if msk.any() and not msk.all():
            ax.contour(msk > 0, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", facecolor="black")
    plt.close(fig)
    with atomic_path(path) as tmp:  # a 64-colour palette: a third of the size
        Image.open(buffer).convert("RGB").quantize(colors=64).save(tmp, format="png",
                                                                   optimize=True)
    return Path(path)


def summary_png(table: pd.DataFrame, path) -> Path:
    """Tissue volumes against age (or per image when no age is known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"] if "status" in table else table
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    has_age = "age" in ok and pd.to_numeric(ok["age"], errors="coerce").notna().any()
    x = pd.to_numeric(ok["age"], errors="coerce") if has_age else np.arange(len(ok))
    for name, colour in zip(("csf", "gm", "wm"), TISSUE_COLOURS):
        if f"{name}_ml" in ok:
            ax.scatter(x, ok[f"{name}_ml"], s=14, color=colour, edgecolor="k", linewidth=0.3,
                       label=name.upper())
    ax.set_xlabel("age (years)" if has_age else "image")
    ax.set_ylabel("volume (ml)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("tissue volumes" + (" against age" if has_age else ""), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


_SCRIPT = """
function sortBy(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var col = Array.prototype.indexOf.call(th.parentNode.children, th);
  var dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
  Array.prototype.forEach.call(th.parentNode.children, function (h) {
    h.removeAttribute('data-dir'); });
  th.setAttribute('data-dir', dir);
  var rows = Array.prototype.slice.call(body.rows);
  function key(row) {
    var cell = row.cells[col], v = cell.getAttribute('data-v');
    if (v === null) v = cell.textContent;
    var n = parseFloat(v);
    return (v !== '' && isFinite(n) && String(n) === String(Number(v))) ? n : v.toLowerCase();
  }
  rows.sort(function (a, b) {
    var x = key(a), y = key(b), sign = dir === 'asc' ? 1 : -1;
    if (typeof x !== typeof y) return (typeof x === 'number' ? -1 : 1) * sign;
    return (x < y ? -1 : x > y ? 1 : 0) * sign;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
document.addEventListener('click', function (e) {
  if (e.target.tagName === 'TH') sortBy(e.target);
});
window.addEventListener('load', function () {
  if (location.hash !== '#selftest') return;
  var out = [], imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++)
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad++; out.push('broken ' + imgs[i].src); }
  out.push('images ' + imgs.length + ' broken ' + bad);
  var th = document.querySelector('th[data-col="brain_ml"]'), body = document.querySelector('#images tbody');
  th.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  var up = Array.prototype.map.call(body.rows, function (r) { return r.cells[th.cellIndex].getAttribute('data-v'); });
  th.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  var down = Array.prototype.map.call(body.rows, function (r) { return r.cells[th.cellIndex].getAttribute('data-v'); });
  out.push('ascending ' + up.join(','));
  out.push('descending ' + down.join(','));
  document.getElementById('selftest').textContent = out.join('\\n');
});
"""

_STYLE = """
body { font: 13px sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
th[data-dir=asc]::after { content: ' \\25B2'; } th[data-dir=desc]::after { content: ' \\25BC'; }
td.text { text-align: left; } td img { display: block; height: 120px; }
tr.flagged td { background: #fff1e6; } td.out { color: #c00; font-weight: bold; }
tr.failed td { background: #fde0e0; }
"""


def _cell(value, column: str, outliers: set) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return '<td data-v="">n/a</td>'
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    text = f"{value:.4g}" if number and isinstance(value, (float, np.floating)) else str(value)
    klass = "out" if column in outliers else ("" if number else "text")
    attr = f' class="{klass}"' if klass else ""
    return f'<td{attr} data-v="{html.escape(str(value))}">{html.escape(text)}</td>'


def write_report(table: pd.DataFrame, out: Path, figures: dict | None = None,
                 title: str = "brain_tf report") -> Path:
    """``out/report.html`` from a flagged volume table (:func:`flag_outliers`);
    ``figures`` maps a row's ``source`` to its overlay PNG (any path under ``out``)."""
    out = Path(out)
    figures = figures or {}
    summary = summary_png(table, out / "figures" / "summary.png")
    shown = [c for c in table.columns if c not in ("source", "outliers", "flagged")]
    head = "<th data-col=\"image\">image</th>" + "".join(
        f'<th data-col="{html.escape(c)}">{html.escape(c)}</th>' for c in shown + ["outliers"])
    rows = []
    for _, row in table.iterrows():
        marks = set(filter(None, str(row.get("outliers", "")).split(";")))
        figure = figures.get(row.get("source"))
        if figure is not None and Path(figure).exists():
            rel = html.escape(os.path.relpath(figure, out))
            alt = html.escape(str(row.get("source")))
            picture = f'<td class="text" data-v="{rel}"><img src="{rel}" alt="{alt}"></td>'
        else:
            picture = '<td class="text" data-v="">no image</td>'
        klass = "failed" if row.get("status") == "failed" else (
            "flagged" if row.get("flagged") else "")
        cells = "".join(_cell(row[c], c, marks) for c in shown)
        cells += _cell(row.get("outliers") or "", "outliers", set())
        rows.append(f'<tr class="{klass}">{picture}{cells}</tr>')
    done = int((table["status"] == "ok").sum()) if "status" in table else len(table)
    failed = len(table) - done
    flagged = int(table["flagged"].sum()) if "flagged" in table else 0
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(table)} images: {done} segmented, {failed} failed, {flagged} flagged
(an outlier beyond |robust z| {OUTLIER_Z} in the marked columns, the tissue QC flag, or
a failure). Overlays: mid-planes, tissue labels (CSF blue, GM orange, WM yellow), brain mask
outline red. Click a column header to sort.</p>
<img src="{html.escape(os.path.relpath(summary, out))}" alt="tissue volumes summary">
<table id="images"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<pre id="selftest"></pre>
<script>{_SCRIPT}</script>
</body></html>
"""
    return write_text(out / "report.html", text)
