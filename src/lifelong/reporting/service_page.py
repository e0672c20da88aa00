"""The service's read-only status page, rendered from plain data: versions, updates with their gate
reports (a candidate-against-current heatmap and the reason for the decision), feedback counts and
held feedback. One HTML string with its images embedded as PNG data URIs, no script, no request to
anywhere: the service serves it as it is.

This module knows nothing about the service's storage or routes; the service turns its state into
the dict documented in `render_service_page` and returns the string. It never receives or shows a
key: the service checks the reader key (typed into `render_key_page`'s form, or a cookie) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lifelong.reporting import plots
from lifelong.reporting.report import Markup, data_uri, esc, figure, page, pct, pixel_size, table

MAX_HELD = 200  # rows of held feedback shown; the count says how many more there are
MAX_INPUT = 160  # characters of one feedback input shown

DECISIONS = {"promoted": "good", "passed": "good", "passed the gate": "good", "rejected": "bad", "failed": "bad",
             "failed the gate": "bad"}


def gate_heatmap(matrix: dict[str, Any], title: str = "Candidate against current") -> Any:
    """The gate's accuracy matrix as a heatmap: rows the current version and the candidate, columns
    the guard sets and the new feedback, accuracies in the cells and the candidate's difference in
    points under each column. `matrix` is ``{"rows": [2 names], "columns": [...], "values": [[...], [...]]}``
    (the ``accuracy_matrix`` of `lifelong.service.gate.decide`)."""
    columns = [str(c) for c in matrix["columns"]]
    values = 100 * np.array(matrix["values"], dtype=np.float64)
    if values.shape != (2, len(columns)):
        raise ValueError(f"gate matrix: need 2 rows of {len(columns)} values, got shape {values.shape}")
    rows = [str(r) for r in matrix.get("rows") or ("current", "candidate")]
    longest = max(len(c) for c in columns)
    width = max(0.75, min(1.1, 9.0 / len(columns)))
    fig = plots.new_figure(len(columns) * width + 3.2, 2.2 + 0.067 * min(longest, plots.MAX_LABEL))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=plots.MAGNITUDE, vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.9)
    for i in range(2):
        for j in range(len(columns)):
            ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=9,
                    color=plots.text_colour(image.cmap(image.norm(values[i, j]))))
    short = [c if len(c) <= plots.MAX_LABEL else c[: plots.MAX_LABEL - 1] + "…" for c in columns]
    diffs = values[1] - values[0]
    ax.set_xticks(range(len(columns)), [f"{c}\n{d:+.1f} pp" for c, d in zip(short, diffs, strict=True)],
                  rotation=90 if longest > 8 or len(columns) > 6 else 0, fontsize=8)
    ax.set_yticks([0, 1], rows, fontsize=9)
    ax.set_xlabel("evaluation set (candidate minus current, percentage points)")
    ax.set_title(title, fontsize=10)
    return fig


def _badge(status: Any) -> Markup:
    cls = DECISIONS.get(str(status), "neutral")
    return Markup(f'<span class="badge {cls}">{esc(status)}</span>')


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 8:  # e.g. a version's feedback ids
        return f"{len(value)} items"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_INPUT else text[: MAX_INPUT - 1] + "…"


def _records_table(records: Sequence[dict[str, Any]], first: Sequence[str] = (), mark: Any = None,
                   key: str = "") -> str:
    """Dicts as a table: the `first` columns, then every other key in the order first seen; the row
    whose `key` equals `mark` is highlighted."""
    columns = [c for c in first if any(c in r for r in records)]
    for r in records:
        columns.extend(k for k in r if k not in columns)
    rows = [["–" if r.get(c) is None else _short(r[c]) for c in columns] for r in records]
    wrap = [any(len(row[k]) > 30 for row in rows) for k in range(len(columns))]
    return table(columns, rows, row_class=(lambda i: "current" if records[i].get(key) == mark else "") if key else None,
                 wrap=wrap)


def _decision(update: dict[str, Any]) -> str:
    report = update.get("report") or {}
    if update.get("status") in ("promoted", "rejected", "failed") or "passed" not in report:
        return str(report.get("decision") or update.get("status", "unknown"))
    return "passed the gate" if report["passed"] else "failed the gate"


def _reason(report: dict[str, Any]) -> str:
    if report.get("reason"):
        return str(report["reason"])
    if report.get("failed"):
        return "; ".join(map(str, report["failed"]))
    return "every check passed" if report.get("passed") else ""


def update_section(update: dict[str, Any]) -> str:
    """One update: its status, the decision and its reason, the gate heatmap and the checks."""
    report = update.get("report") or {}
    uid = update.get("id", "?")
    base = update.get("parent_version", update.get("base_version"))
    created = update.get("created_at", update.get("created"))
    facts = [esc(created) if created else "", f"from version {esc(base)}" if base is not None else "",
             f"candidate version {esc(update['candidate_version'])}" if update.get("candidate_version") is not None
             else "",
             f"{esc(update['examples'])} feedback examples" if update.get("examples") is not None else "",
             f"status {esc(update.get('status', '–'))}"]
    out = [f'<section id="update-{esc(uid)}"><h3>Update {esc(uid)} {_badge(_decision(update))}</h3>'
           f"<p>{' · '.join(f for f in facts if f)}</p>"]
    if _reason(report):
        out.append(f"<p><strong>Reason:</strong> {esc(_reason(report))}</p>")
    matrix = report.get("accuracy_matrix")
    if matrix:
        tolerance = f" (tolerance {pct(report['tolerance'])} pp)" if report.get("tolerance") is not None else ""
        fig = gate_heatmap(matrix, f"Update {uid}: candidate against current{tolerance}")
        width, height = pixel_size(fig)
        out.append(figure(data_uri(fig), width, height, f"gate heatmap of update {uid}",
                          "Accuracy of the current version and the candidate on every guard set (the tasks "
                          "already learned) and on the held-out part of the new feedback."))
    checks = report.get("checks") or []
    if checks:
        rows = [[c.get("check", ""), c.get("name", ""), c.get("size", "–"), pct(c.get("current")),
                 pct(c.get("candidate")), pct(c.get("threshold")),
                 "–" if c.get("current") is None or c.get("candidate") is None
                 else f"{100 * (c['candidate'] - c['current']):+.1f}",
                 _badge("passed" if c.get("passed") else "failed") if "passed" in c else "–"] for c in checks]
        out.append(table(["check", "set", "examples", "current (%)", "candidate (%)", "needed (%)",
                          "difference (pp)", "result"], rows, [False, False, True, True, True, True, True, False]))
    if update.get("error"):
        out.append(f"<p><strong>Error:</strong> <code>{esc(update['error'])}</code></p>")
    out.append("</section>")
    return "\n".join(out)


def render_service_page(state: dict[str, Any]) -> str:
    """The service status page as one HTML string (images embedded as data URIs).

    `state` is plain data, the shapes the service's API already returns (`model_dump()` of its
    replies); every key is optional except ``current_version``:

    - ``title``: str, e.g. the model's name; ``generated``: str, when the state was read.
    - ``current_version``: int, the version that serves predictions now.
    - ``versions``: list of dicts, one per version, any keys, shown as a table with the current
      version's row marked: ``number`` (int, or ``version``), then ``status``, ``parent``,
      ``update_id``, ``created_at``, ``promoted_at``, ``feedback_ids`` (a long list shows as a count)
      first when present.
    - ``updates``: list of dicts, newest first: ``id``, ``status`` ("queued", "training", "evaluating",
      "promoted", "rejected", "failed"), optional ``created_at``, ``parent_version``,
      ``candidate_version``, ``examples`` (a count), ``error`` and ``report``, the gate's report as
      `lifelong.service.gate.decide` returns it::

          {"passed": bool, "tolerance": 0.01, "failed": ["a sentence per failed check", ...],
           "accuracy_matrix": {"rows": ["current", "candidate"], "columns": [guard sets..., "new feedback"],
                               "values": [[current accuracies 0..1], [candidate accuracies 0..1]]},
           "checks": [{"check": "guard" | "new feedback", "name": str, "size": int, "current": float,
                       "candidate": float, "threshold": float, "passed": bool}, ...]}

      (a ``reason`` string, when present, is shown instead of the failed sentences).
    - ``feedback``: dict of counts, e.g. `Store.counts()`: ``{"feedback": 240, "pending": 12, ...}``
      (a nested dict shows as "key: value" pairs).
    - ``held_feedback``: list of dicts (e.g. ``id``, ``input``, ``label``, ``source``, ``reason``,
      ``received``): examples kept out of training, with the reason.

    >>> matrix = {"rows": ["v1", "candidate"], "columns": ["banking", "new"], "values": [[0.9, 0.2], [0.9, 0.8]]}
    >>> html = render_service_page({"current_version": 2, "versions": [{"number": 1}, {"number": 2, "parent": 1}],
    ...     "updates": [{"id": 7, "status": "promoted", "report": {"passed": True, "accuracy_matrix": matrix}}]})
    >>> html.count("data:image/png;base64,"), "every check passed" in html, "<script" in html
    (1, True, False)
    """
    current = state["current_version"]
    title = state.get("title") or "lifelong service"
    versions = [v if "number" in v else {"number": v["version"], **{k: x for k, x in v.items() if k != "version"}}
                for v in state.get("versions") or []]
    versions.sort(key=lambda v: -int(v["number"]))
    updates = state.get("updates") or []
    held = state.get("held_feedback") or []
    counts = state.get("feedback") or {}
    nav = "".join(f'<li><a href="#{k}">{t}</a></li>' for k, t in (
        ("versions", "Versions"), ("updates", "Updates"), ("feedback", "Feedback"), ("held", "Held feedback")))
    out = [f"<header><h1>{esc(title)}</h1><p class=meta>Serving version <strong>{esc(current)}</strong>"
           + (f" · state read {esc(state['generated'])}" if state.get("generated") else "")
           + f" · read-only</p><nav><ul>{nav}</ul></nav></header>"]
    out.append(f'<section id="versions"><h2>Versions ({len(versions)})</h2>')
    out.append(_records_table(versions, ("number", "status", "parent", "update_id", "created_at", "promoted_at",
                                         "feedback_ids"), current, "number")
               if versions else "<p>No versions recorded.</p>")
    out.append("</section>")
    out.append(f'<section id="updates"><h2>Updates ({len(updates)})</h2>')
    if updates:
        decided = [_decision(u) for u in updates]
        out.append("<p>" + ", ".join(f"{decided.count(d)} {esc(d)}" for d in dict.fromkeys(decided)) + ".</p>")
        out.extend(update_section(u) for u in updates)
    else:
        out.append("<p>No updates yet.</p>")
    out.append("</section>")
    out.append('<section id="feedback"><h2>Feedback</h2>')
    out.append(table(["", "count"], [[k, _short(v)] for k, v in counts.items()], [False, True]) if counts
               else "<p>No feedback counts.</p>")
    out.append("</section>")
    out.append(f'<section id="held"><h2>Held feedback ({len(held)})</h2>')
    if held:
        out.append(_records_table(held[:MAX_HELD], ("id", "input", "label", "source", "reason", "received")))
        if len(held) > MAX_HELD:
            out.append(f"<p>… and {len(held) - MAX_HELD} more.</p>")
    else:
        out.append("<p>No feedback is held.</p>")
    out.append("</section>")
    return page(title, "\n".join(out))


def render_update_page(update: dict[str, Any], title: str | None = None) -> str:
    """One update's gate report as a page of its own (the same input as one item of `updates`)."""
    title = title or f"lifelong update {update.get('id', '?')}"
    return page(title, f"<header><h1>{esc(title)}</h1></header>\n{update_section(update)}")


def render_key_page(action: str = "/", message: str = "") -> str:
    """A form that asks for the reader key and POSTs it (field ``key``) to `action`, so the key is
    never in a URL; the service checks it and answers with a cookie and the status page."""
    note = f'<p><span class="badge bad">{esc(message)}</span></p>' if message else ""
    return page("lifelong service: key", f"<h1>lifelong service</h1>{note}<form method=post action=\"{esc(action)}\">"
                '<p><label>Reader key <input type=password name=key autocomplete=off required></label> '
                "<button type=submit>Open</button></p></form>")
