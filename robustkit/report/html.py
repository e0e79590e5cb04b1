"""Page assembly: one self-contained HTML file (inline CSS, images as data URIs, no scripts).

Nothing on the page refers to another file or the network, so ``index.html`` can be
mailed, archived or opened offline. All text that comes from the CSV, the spec or
artifact metadata is escaped by the section builders before it reaches ``page``.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

CSS = """
:root{--ink:#1f2430;--muted:#667085;--line:#e4e7ec;--bg:#f6f7fb;--card:#fff;--accent:#3b5bdb;
--good:#2b8a3e;--bad:#c92a2a;--warn:#e67700}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:var(--bg)}
header.top{background:linear-gradient(120deg,#1c2541,#3a506b);color:#fff;padding:28px 40px 22px}
header.top h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:.2px}
header.top p{margin:0 0 14px;color:#c9d3e6}
.chips{display:flex;flex-wrap:wrap;gap:8px}
.chip{background:rgba(255,255,255,.12);border:1px solid rgba(255,255,255,.18);border-radius:999px;
padding:3px 12px;font-size:13px}
.chip b{font-weight:600;color:#9fb4ff;margin-right:6px}
nav.toc{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.94);border-bottom:1px solid var(--line);
padding:8px 40px;font-size:14px;display:flex;align-items:center;gap:6px;flex-wrap:wrap}
nav.toc h2{font-size:11px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);margin:0 8px 0 0}
nav.toc ol{display:flex;flex-wrap:wrap;gap:4px;margin:0;padding:0;list-style:none;counter-reset:toc}
nav.toc li{counter-increment:toc}
nav.toc a{display:block;color:var(--ink);text-decoration:none;padding:3px 10px;border-radius:999px}
nav.toc a::before{content:counter(toc) ". ";color:var(--muted)}
nav.toc a:hover{background:#eef2ff;color:var(--accent)}
main{max-width:1480px;margin:0 auto;padding:22px 24px 40px}
section{scroll-margin-top:56px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 26px;
margin-bottom:24px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
section>h2{margin:0 0 6px;font-size:20px}
section>p.lead{margin:0 0 14px;color:var(--muted);max-width:900px}
h3{font-size:16px;margin:22px 0 8px}h4{margin:0;font-size:15px}h5{margin:0 0 4px;font-size:12px;
font-weight:600;color:var(--muted);text-align:center;white-space:nowrap}
.muted{color:var(--muted)}p.muted{margin:2px 0 8px;font-size:13px}
.table-wrap{overflow-x:auto;margin:10px 0 18px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:var(--muted);font-size:13px;padding:0 0 8px;max-width:900px}
th,td{border:1px solid var(--line);padding:5px 9px;text-align:right;white-space:nowrap}
table.grid td,table.grid thead th{padding:4px 6px}
thead th{background:#f1f3f9;font-weight:600;text-align:center}
th.grp{border-bottom-color:#d0d5dd}th .norm{font-weight:400;color:var(--muted);font-size:11px}th.adaptive{background:#fff4e6;color:#a34700}
tbody th{text-align:left;background:#fafbfc;font-weight:600}
th.corner{text-align:left;border-bottom:0}th.corner.eps{text-align:right;border-top:0;
font-style:italic;color:var(--muted)}
td.best{font-weight:700;outline:2px solid var(--good);outline-offset:-2px;position:relative}
td.best::after{content:"\\2605";color:var(--good);position:absolute;top:0;right:2px;font-size:8px}
td.na{color:#98a2b3;text-align:center}
td.outranked{color:#98a2b3;text-decoration:line-through;text-decoration-color:#d0d5dd}
table.ranking td{line-height:1.2;min-width:64px}table.ranking .by{font-size:10.5px;color:var(--muted);
font-weight:400}td.rank{color:var(--muted);text-align:center}
table.ranking td.weak{outline:1px dashed #f08c00;outline-offset:-2px}
table.ranking .weak-mark{display:block;font-size:10px;color:#a34700;font-weight:600}
.badge.def{background:#eef2ff;color:#364fc7;border:1px solid #dbe4ff;font-size:10.5px;padding:0 5px;
margin-left:4px}
table.records td{text-align:left;white-space:normal;max-width:520px}
table.kv{margin:0 0 12px}table.kv th{text-align:left;background:#fafbfc}table.kv td{text-align:left;
white-space:normal;word-break:break-word}
table.kv caption{font-weight:600;color:var(--ink)}
.kv-grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.badge{display:inline-block;border-radius:6px;padding:1px 8px;font-size:12px;font-weight:600}
.badge.warn{background:#fff4e6;color:#a34700;border:1px solid #ffd8a8}
.flags{background:#fffaf3;border:1px solid #ffe3bf;border-radius:8px;padding:8px 14px;margin:0 0 16px;
font-size:13px}.flags ul{margin:6px 0 0;padding-left:20px}
td.flag{text-align:left;white-space:normal;min-width:170px;max-width:260px}
thead th[rowspan]{white-space:normal;min-width:56px;max-width:96px}td.ok-flag{color:var(--good);text-align:center}
figure.plot{margin:8px 0 22px}figure.plot img{max-width:100%;height:auto;border:1px solid var(--line);
border-radius:8px}
figure.plot figcaption,figcaption{font-size:13px;color:var(--muted)}
.gallery-row{display:grid;grid-template-columns:140px minmax(0,1fr);gap:14px;align-items:center;
padding:10px 0;border-top:1px solid var(--line)}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
figure.tile{margin:0;text-align:center;width:74px}
figure.tile img,.noimg{width:66px;height:66px;image-rendering:pixelated;border-radius:4px;
border:1px solid var(--line);display:block;margin:0 auto 3px;background:#000}
.noimg{background:#f2f4f7;color:#98a2b3;font-size:11px;line-height:66px}
figcaption{line-height:1.3}
figure.pert img{outline:2px solid #dbe4ff;outline-offset:1px}
.lbl{font-weight:700;color:var(--ink)}.lbl.bad{color:var(--bad)}.lbl.good{color:var(--good)}
.df-row{padding:10px 0;border-top:1px solid var(--line)}
.df-row .tiles{gap:8px;flex-wrap:nowrap;overflow-x:auto;padding-bottom:4px}
.df-col{display:flex;flex-direction:column;gap:6px;padding:6px 2px;flex:none;
border-radius:8px;background:#fafbfc;border:1px solid var(--line)}
.df-col.orig{background:#eef2ff}
.tiles.defended{margin-top:8px;flex-wrap:wrap}.df-label{flex:none;width:92px;align-self:center;text-align:center;
font-size:12px;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
pre{background:#0f172a;color:#e2e8f0;border-radius:8px;padding:12px 14px;overflow:auto;font-size:12.5px;
max-height:420px}
ul.legend{display:flex;flex-wrap:wrap;gap:4px 16px;list-style:none;margin:6px 0 4px;padding:0;
font-size:13px;max-width:100%}ul.legend li{display:flex;align-items:center;gap:5px;white-space:nowrap}
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px}
@media (max-width:900px){main{padding:14px}nav.toc{padding:6px 14px;position:static}
.gallery-row{grid-template-columns:1fr}header.top{padding:22px 18px}}
@media print{nav.toc{display:none}section{break-inside:avoid}}
"""


@dataclass(frozen=True)
class Section:
    """One part of the page: anchor id, title, lead paragraph (HTML) and body (HTML)."""

    id: str
    title: str
    lead: str
    body: str


def page(title: str, subtitle: str, facts: list[tuple[str, str]], sections: list[Section]) -> str:
    """Assemble the page; ``title``, ``subtitle`` and ``facts`` are plain text (escaped here)."""
    chips = "".join(f'<span class="chip"><b>{escape(k)}</b>{escape(v)}</span>' for k, v in facts)
    toc = "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>' for s in sections)
    body = "".join(
        f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>'
        + (f'<p class="lead">{s.lead}</p>' if s.lead else "") + s.body + "</section>"
        for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # The page loads nothing: a strict policy makes that a guarantee, not a hope.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>'
        f'<div class="chips">{chips}</div></header>'
        f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>'
        f"<main>{body}<footer>Generated by robustkit. Self-contained: no scripts, "
        "no network, images embedded.</footer></main></body></html>\n"
    )


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and ``os.replace``."""
    from robustkit.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text.encode("utf-8"))
