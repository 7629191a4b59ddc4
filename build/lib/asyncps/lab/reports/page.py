"""The HTML page of ``asyncps report``: settings, the results tables (one row
per configuration over its seeds, when one ran on several; one row per run,
a failed run marked with its error), and every picture embedded as a data URI,
so that the page is one file that can be mailed. It takes plain data, one
:class:`Entry` per run and their :class:`~lab.reports.configurations.Configuration`
groups; ``lab.reports.report`` reads the runs, draws the pictures and calls
:func:`page`."""

from __future__ import annotations

import base64
import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

from asyncps.lab.reports.configurations import Configuration, failed, spread
from asyncps.lab.reports.rundir import seconds
from asyncps.optim.validation import is_number

__all__ = ["page", "Entry"]


@dataclass(frozen=True)
class Entry:
    """One run as the page shows it: a row of the table, and a section with its pictures."""

    name: str
    dir: Path
    settings: dict                    # dotted key -> value, as in its config.toml
    summary: dict                     # as in its summary.json
    events: list[tuple[float, str]]   # (time, message)
    colour: str                       # its colour in the overlays, e.g. "#1f77b4"
    pictures: list[tuple[Path, str]]  # (PNG, caption)


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0; background: #f6f7f9; }
main { box-sizing: border-box; max-width: 1400px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; }
h3 { font-size: 17px; margin: 28px 0 6px; }
.meta, .note { color: #59636e; font-size: 13px; }
nav a { margin-right: 14px; }
code, .mono { font-family: "DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.differs code { background: #fff4d6; padding: 1px 5px; border-radius: 4px; }
dl.settings { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 2px 24px;
              margin: 8px 0; }
dl.settings div { display: flex; gap: 8px; border-bottom: 1px dotted #e3e6ea; padding: 2px 0; }
dl.settings dt { color: #59636e; font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 13px; }
dl.settings dd { margin: 0 0 0 auto; font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 13px; }
table.runs { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 14px; }
table.runs th, table.runs td { padding: 6px 10px; border-bottom: 1px solid #e3e6ea; text-align: right;
                               vertical-align: top; }
table.runs th { background: #f0f2f5; font-weight: 600; font-size: 13px; }
table.runs th:first-child, table.runs td:first-child, table.runs th.text, table.runs td.text { text-align: left; }
table.runs tbody tr:nth-child(even) { background: #fafbfc; }
table.runs td.best { font-weight: 700; }
table.runs td.name, table.runs td.text { white-space: nowrap; }
table.runs .spread { display: block; color: #59636e; font-size: 12px; white-space: nowrap; }
table.runs .muted { color: #8c959f; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 7px;
          vertical-align: -1px; }
figure { margin: 12px 0 22px; }
figure img { box-sizing: border-box; max-width: 100%; height: auto; border: 1px solid #e3e6ea;
             border-radius: 4px; display: block; }
figcaption { color: #59636e; font-size: 13px; margin-top: 4px; }
article { border-top: 1px solid #e3e6ea; }
.tag { background: #ffebe9; color: #a40e26; border-radius: 4px; padding: 0 6px; margin-left: 6px; font-size: 12px;
       font-weight: 600; white-space: nowrap; }
.failures { border-left: 4px solid #cf222e; background: #fff8f7; padding: 4px 14px; margin: 8px 0 16px; }
.failures li { margin: 4px 0; }
"""


def page(runs: list[Entry], out: Path, shared: dict, differing: list[str], overlays: list[tuple[Path, str]],
         groups: list[Configuration]) -> str:
    """The report's HTML, written to go in ``out``: one file, every picture embedded.
    ``shared``: the settings every run has alike; ``differing``: the keys of those that
    differ; ``overlays``: the comparison's (PNG, caption), if any; ``groups``: the runs'
    configurations."""
    seeded = len(groups) < len(runs)  # some configuration ran on several seeds
    across = [key for key in differing if not (seeded and key == "seed")]
    named = ", ".join(across[:3]) + (f" and {len(across) - 3} more" if len(across) > 3 else "")
    if len(runs) == 1:
        title = f"Run {runs[0].name}"
    elif len(groups) == 1 and seeded:
        title = f"{groups[0].name}: {len(runs)} runs"
    else:
        compared = f"{len(groups)} configurations compared ({len(runs)} runs)" if seeded else \
            f"{len(runs)} runs compared"
        title = compared + (f": {named}" if named else "")
    # Each section: id -> (heading, content).
    sections = {"settings": ("Settings", _settings_section(runs, shared, differing, seeded))}
    if seeded:
        sections["configurations"] = ("Over seeds", _configurations_section(runs, groups, across))
    results = _results_section(runs, differing, seeded)
    sections["results"] = ("Each run's results", results) if seeded else ("Results", results)
    if overlays:
        sections["comparison"] = ("Side by side", "".join(_figure_html(path, caption) for path, caption in overlays))
    sections["runs"] = ("Each run" if len(runs) > 1 else "Plots",
                        "".join(_run_article(i, run, out, differing) for i, run in enumerate(runs)))
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">asyncps report, written {written} · {len(runs)} run{"s" * (len(runs) != 1)}</p>',
            "<nav>" + "".join(f'<a href="#{key}">{_e(heading)}</a>' for key, (heading, _) in sections.items())
            + "</nav>"]
    body += [f'<section id="{key}"><h2>{_e(heading)}</h2>{content}</section>'
             for key, (heading, content) in sections.items()]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _value(value) -> str:
    """A setting as TOML writes it: true, 0.1, "sync" without quotes, [64, 32], {} ."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _settings_section(runs: list[Entry], shared: dict, differing: list[str], seeded: bool) -> str:
    parts = []
    if len(runs) > 1:
        if differing:
            parts.append('<p class="differs">The runs differ in '
                         + ", ".join(f"<code>{_e(key)}</code>" for key in differing)
                         + " (values in the table below); everything else is the same:</p>")
        else:
            parts.append("<p>All runs have the same settings.</p>")
        seeds = {run.settings.get("seed") for run in runs}
        if seeded:
            parts.append('<p class="note">Runs that differ only in their seed are one configuration: their data '
                         "order, initial parameters and delays differ. <a href=\"#configurations\">Over seeds</a> "
                         "gives each configuration's mean and spread.</p>")
        elif len(seeds) > 1:
            parts.append('<p class="note">The runs do not share a seed, so their data order, initial parameters '
                         "and delays differ too.</p>")
    parts.append('<dl class="settings">' + "".join(
        f"<div><dt>{_e(key)}</dt><dd>{_e(_value(value))}</dd></div>" for key, value in shared.items()) + "</dl>")
    return "".join(parts)


def _number(value, digits: int = 4, unit: str = "") -> str | None:
    return f"{value:.{digits}g}{unit}" if is_number(value) else None


def _percent(value) -> str | None:
    return f"{100 * value:.2f}%" if is_number(value) else None


def _columns(runs: list[Entry]) -> list[tuple[str, callable, callable, int]]:
    """(header, value of a run, its text, direction: -1 lower is better, +1 higher, 0 neither)."""
    final = lambda key: lambda run: (run.summary.get("final") or {}).get(key)  # noqa: E731
    stale = lambda key: lambda run: (run.summary.get("staleness") or {}).get(key)  # noqa: E731
    columns = [("test loss", final("test_loss"), _number, -1)]
    if any(is_number(final("test_accuracy")(run)) for run in runs):
        targets = {run.summary.get("target_accuracy") for run in runs} - {None}
        target = f" {100 * targets.pop():g}%" if len(targets) == 1 else " target"
        columns += [("test accuracy", final("test_accuracy"), _percent, +1),
                    (f"time to{target} (s)", lambda run: run.summary.get("time_to_target"),
                     lambda v: _number(v, 3), -1)]
    if any(is_number(final("test_rmse")(run)) for run in runs):
        columns.append(("test RMSE", final("test_rmse"), _number, -1))
    columns += [("mean staleness", stale("mean"), lambda v: _number(v, 3), -1),
                ("p95 staleness", stale("p95"), lambda v: _number(v, 3), -1),
                ("updates", lambda run: run.summary.get("updates"), lambda v: _number(v, 8), 0),
                ("updates / s", lambda run: run.summary.get("updates_per_second"), lambda v: _number(v, 3), +1),
                (f"run {seconds(runs)}", lambda run: run.summary.get("run_time"), lambda v: _number(v, 3), 0)]
    return columns


def _best(columns: list, values: dict[str, list]) -> dict:
    """Each column's best value among ``values`` (header -> a value per row), when they differ."""
    best = {}
    for header, _, _, direction in columns:
        numbers = [v for v in values[header] if is_number(v)]
        if direction and len(set(numbers)) > 1:
            best[header] = max(numbers) if direction > 0 else min(numbers)
    return best


def _differs(run: Entry, keys: list[str]) -> str:
    """The run's values of ``keys``, one ``key = value`` a line, escaped."""
    return "<br>".join(f"{_e(key)} = {_e(_value(run.settings.get(key)))}" for key in keys)


def _configurations_section(runs: list[Entry], groups: list[Configuration], differing: list[str]) -> str:
    """One row per configuration: each figure's mean ± standard deviation over its runs that finished."""
    columns = _columns(runs)
    head = "<th>configuration</th>" + ('<th class="text">settings that differ</th>' if differing else "") + (
        '<th class="text">seeds</th><th>runs</th>') + "".join(f"<th>{_e(header)}</th>" for header, *_ in columns)
    finished = [[runs[i] for i in group.runs if not failed(runs[i])] for group in groups]
    stats = {header: [spread([get(run) for run in group]) for group in finished] for header, get, *_ in columns}
    best = _best(columns, {header: [s and s[0] for s in column] for header, column in stats.items()})
    rows = []
    for g, group in enumerate(groups):
        first = runs[group.runs[0]]
        count = len(group.runs) - len(finished[g])
        cells = [f'<td class="name"><span class="swatch" style="background:{_e(first.colour)}"></span>'
                 f"{_e(group.name)}</td>"]
        if differing:
            cells.append(f'<td class="text mono">{_differs(first, differing)}</td>')
        cells.append('<td class="text">' + ", ".join(_e(_value(runs[i].settings.get("seed"))) for i in group.runs)
                     + "</td>")
        cells.append(f"<td>{len(group.runs)}" + (f' <span class="tag">{count} failed</span>' if count else "")
                     + "</td>")
        for header, _, text, _ in columns:
            if stats[header][g] is None:
                reached = "not reached" if header.startswith("time to") and finished[g] else "—"
                cells.append(f'<td class="muted">{reached}</td>')
                continue
            mean, std, n = stats[header][g]
            spread_text = " ".join(([f"± {text(std)}"] if std is not None else [])
                                   + ([f"({n} of {len(finished[g])})"] if n < len(finished[g]) else []))
            bold = ' class="best"' if header in best and mean == best[header] else ""
            cells.append(f"<td{bold}>{_e(text(mean))}"
                         + (f' <span class="spread">{_e(spread_text)}</span>' if spread_text else "") + "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = ["Each figure: the mean ± the sample standard deviation (n − 1 in the denominator) over the "
             "configuration's runs that finished; a failed run is left out.",
             "(k of n): only k of those runs have the figure (time to target: reached the target)."]
    if best:
        notes.append("The best mean of a column is bold.")
    return (f'<table class="runs configurations"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table><p class="note">{" ".join(notes)}</p>')


def _failures(runs: list[Entry], differing: list[str], seeded: bool) -> str:
    """The failed runs, each named with its settings and its error."""
    failures = [(i, run) for i, run in enumerate(runs) if failed(run)]
    if not failures:
        return ""
    items = "".join(f'<li><a href="#run-{i + 1}">{_e(run.name)}</a>'
                    + (f' (<span class="mono">{_differs(run, differing).replace("<br>", ", ")}</span>)'
                       if differing else "")
                    + f': <span class="mono">{_e(failed(run))}</span></li>' for i, run in failures)
    left_out = "the best values and the means over seeds" if seeded else "the best values"
    return (f'<div class="failures"><p>{len(failures)} of {len(runs)} run{"s" * (len(runs) != 1)} failed. The '
            f"table shows what each recorded before it failed, and leaves it out of {left_out}:</p>"
            f"<ul>{items}</ul></div>")


def _results_section(runs: list[Entry], differing: list[str], seeded: bool) -> str:
    columns = _columns(runs)
    head = '<th>run</th>' + ('<th class="text">settings that differ</th>' if differing else "") + "".join(
        f"<th>{_e(header)}</th>" for header, *_ in columns)
    finished = [run for run in runs if not failed(run)]
    best = _best(columns, {header: [get(run) for run in finished] for header, get, *_ in columns}) \
        if len(runs) > 1 else {}
    rows = []
    for i, run in enumerate(runs):
        tag = ' <span class="tag">failed</span>' if failed(run) else ""
        cells = [f'<td class="name"><span class="swatch" style="background:{_e(run.colour)}"></span>'
                 f'<a href="#run-{i + 1}">{_e(run.name)}</a>{tag}</td>']
        if differing:
            cells.append(f'<td class="text mono">{_differs(run, differing)}</td>')
        for header, get, text, _ in columns:
            value = get(run)
            shown = text(value)
            if shown is None:
                missing = "not reached" if header.startswith("time to") else "—"
                cells.append(f'<td class="muted">{missing}</td>')
            else:
                bold = ' class="best"' if header in best and value == best[header] and not failed(run) else ""
                cells.append(f"<td{bold}>{_e(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = ["Final values are the last evaluation's."]
    if best:
        notes.append("The best value of a column is bold.")
    if any(header.startswith("time to") for header, *_ in columns):
        notes.append("Time to target: the first evaluation whose test accuracy reached the run's "
                     "<code>train.target_accuracy</code>.")
    notes.append("Staleness: updates a push's parameters missed, over all pushes.")
    return (_failures(runs, differing, seeded) + f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table><p class="note">{" ".join(notes)}</p>')


def _figure_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption or path.name)}">'
            f"<figcaption>{_e(caption)} <span class=\"mono\">({_e(path.name)})</span></figcaption></figure>")


def _run_article(i: int, run: Entry, out: Path, differing: list[str]) -> str:
    link = Path(os.path.relpath(run.dir.resolve(), out.resolve())).as_posix()
    facts = [f'<span class="tag">failed</span> <span class="mono">{_e(failed(run))}</span>'] if failed(run) else []
    facts.append(f'directory <a class="mono" href="{_e(link)}/">{_e(run.dir)}</a>')
    facts += [f"<code>{_e(key)} = {_e(_value(run.settings.get(key)))}</code>" for key in differing]
    events = [f"{_e(message)} at {at:.3g} s" for at, message in run.events]
    if events:
        facts.append("events: " + "; ".join(events))
    shards = run.summary.get("shards") or {}
    if shards:
        facts.append("pushes per shard, acknowledged / applied / lost to a restore: " + "; ".join(
            f"shard {_e(s)}: {a['acknowledged']} / {a['applied']} / {'unknown' if a['lost'] is None else a['lost']}"
            for s, a in shards.items()))
    return (f'<article id="run-{i + 1}"><h3>{_e(run.name)}</h3><p class="meta">{" · ".join(facts)}</p>'
            + "".join(_figure_html(path, caption) for path, caption in run.pictures) + "</article>")
