"""The read-only status page at `/`: versions, updates with their gate reports, feedback, held feedback.

A browser cannot send the `X-API-Key` header, so the page has its own sign-in: `GET /` without a
valid cookie answers `render_key_page`'s form, which POSTs the key (never in a URL) to `/key`; a key
of any role (reader or higher) gets a cookie and a redirect to `/`. The cookie holds the key's
SHA-256, not the key, and is HttpOnly and SameSite=Strict: it opens this page and nothing else (the
API still needs the key itself), script cannot read it and other sites cannot send it. The page is
static HTML (images as data URIs, no script), served with a Content-Security-Policy that allows
nothing else. These routes are not part of the API: they are left out of the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from lifelong.reporting.service_page import MAX_HELD, render_key_page, render_service_page
from lifelong.service.auth import allows, hash_key
from lifelong.service.runtime import Service
from lifelong.service.tables import Feedback, Update

COOKIE = "lifelong_page"
COOKIE_SECONDS = 12 * 3600
MAX_UPDATES = 10  # updates shown with their gate heatmaps, newest first (each figure takes a moment to draw)
HEADERS = {
    # the page needs its inline style, data: images and a form posting here; nothing else may load or frame it
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _update(u: Update) -> dict[str, Any]:
    report = u.report or {}
    examples = (report.get("feedback") or {}).get("examples")
    screening = report.get("screening") or {}
    if screening:  # what the screens saw: the kept examples trained or gated, and those they held
        examples = screening.get("examples", examples)
    return {"id": u.id, "status": u.status, "created_at": _when(u.created_at), "parent_version": u.parent_version,
            "candidate_version": u.candidate_version, "examples": examples, "error": u.error, "report": report}


def _held(f: Feedback) -> dict[str, Any]:
    reasons = "; ".join(f"{r.get('screen')}: {r.get('reason')}" for r in f.reasons or [])
    source = f"key {f.key_id}" if f.key_id is not None else (f.source or "–")
    return {"id": f.id, "input": f.input, "label": f.label, "source": source, "reason": reasons,
            "received": _when(f.created_at), "update": f.update_id}


def service_state(service: Service) -> dict[str, Any]:
    """The store's state in the shape `render_service_page` takes."""
    store = service.store
    current = store.current_version()
    versions = [{"number": v.number, "status": v.status, "parent": v.parent, "update_id": v.update_id,
                 "created_at": _when(v.created_at), "promoted_at": _when(v.promoted_at),
                 "feedback_ids": list(v.feedback_ids or [])} for v in store.versions()]
    updates = [_update(u) for u in reversed(store.updates()[-MAX_UPDATES:])]
    counts = store.feedback_counts()
    return {"title": f"lifelong service: {service.config.model_dir.name}", "current_version": current,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "versions": versions,
            "updates": updates, "feedback": {"total": sum(counts.values()), **counts},
            "held_feedback": [_held(f) for f in store.feedback(status="held", limit=MAX_HELD)]}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def add_page_routes(app: FastAPI, service: Service) -> None:
    """`GET /` (the page, or the key form) and `POST /key` (the form's target)."""

    def signed_in(request: Request) -> bool:
        digest = request.cookies.get(COOKIE, "")
        if len(digest) != 64:
            return False
        row = service.store.key_by_hash(digest)  # read each time: a revoked key closes the page at once
        return row is not None and allows(row.role, "reader")

    @app.get("/", include_in_schema=False)
    def status_page(request: Request) -> Response:
        if not signed_in(request):
            return _html(render_key_page("/key"))
        return _html(render_service_page(service_state(service)))

    @app.post("/key", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        # the form's body, parsed here: a few bytes of urlencoded text need no multipart parser
        try:
            fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=5)
        except ValueError:
            return _html(render_key_page("/key", "send the form as it is"), 400)
        key = (fields.get("key") or [""])[0].strip()
        who = await run_in_threadpool(service.auth.identify, key)  # a database read: off the event loop
        if who is None or not allows(who.role, "reader"):
            return _html(render_key_page("/key", "unknown or revoked key"), 401)
        reply = RedirectResponse("/", status_code=303, headers=HEADERS)
        reply.set_cookie(COOKIE, hash_key(key), max_age=COOKIE_SECONDS, path="/", httponly=True, samesite="strict",
                         secure=request.url.scheme == "https")
        return reply
