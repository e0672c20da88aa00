"""The HTTP routes (FastAPI). Each route checks the caller's role, hands the work to the runtime or
the store, and turns a client's mistake into a 4xx with a message; the OpenAPI page is at /docs and
the read-only status page for people at / (page.py)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

import lifelong
from lifelong.checkpoint import CONFIG, CheckpointError, ModelSpec
from lifelong.screening import SourceRateLimiter
from lifelong.service.auth import Principal, allows
from lifelong.service.docs import add_offline_docs
from lifelong.service.metrics import CONTENT_TYPE, Metrics
from lifelong.service.middleware import BodyLimit, RequestMetrics
from lifelong.service.page import add_page_routes
from lifelong.service.runtime import Service
from lifelong.service.schemas import (
    FeedbackItem,
    FeedbackList,
    FeedbackReply,
    FeedbackRequest,
    Health,
    PredictReply,
    PredictRequest,
    RollbackRequest,
    UpdateCreated,
    UpdateInfo,
    UpdateRequest,
    VersionInfo,
    Versions,
)
from lifelong.service.serving import InputError, spec_summary
from lifelong.service.tables import FEEDBACK_STATUSES, Feedback, Update, Version

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (`lifelong keys add`)")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")
Id = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
FeedbackStatus = Literal[FEEDBACK_STATUSES]  # type: ignore[valid-type]


def _version_info(v: Version, current: int, detail: bool = False, model: dict[str, Any] | None = None) -> VersionInfo:
    return VersionInfo(number=v.number, status=v.status, current=v.number == current, parent=v.parent,
                       update_id=v.update_id, created_at=v.created_at, promoted_at=v.promoted_at,
                       feedback_ids=list(v.feedback_ids or []), report=v.report if detail else None, model=model)


def _update_info(u: Update) -> UpdateInfo:
    return UpdateInfo(id=u.id, status=u.status, report=u.report, error=u.error, options=u.options or {},
                      parent_version=u.parent_version, candidate_version=u.candidate_version,
                      created_at=u.created_at, started_at=u.started_at, finished_at=u.finished_at)


def _feedback_item(f: Feedback) -> FeedbackItem:
    return FeedbackItem.model_validate({"id": f.id, "status": f.status, "label": f.label, "input": f.input,
                                        "task": f.task, "source": f.source, "key_id": f.key_id,
                                        "update_id": f.update_id, "created_at": f.created_at, "reasons": f.reasons})


class RateLimit:
    """Feedback examples per minute per API key, in this process (a token bucket per key, thread-safe)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.limiter = SourceRateLimiter(per_minute)
        self.lock = threading.Lock()

    def check(self, key_id: int, n: int) -> None:
        """Take `n` examples' worth for the key, or raise 429 (and take nothing)."""
        with self.lock:
            allowed, wait = self.limiter.take(f"key:{key_id}", n)
        if allowed:
            return
        if math.isinf(wait):
            raise HTTPException(429, f"{n} examples in one request is more than this key may send in a minute "
                                f"({self.per_minute}); send at most {self.per_minute} per request")
        raise HTTPException(429, f"this key may send {self.per_minute} feedback examples a minute; these {n} "
                            f"examples would exceed it: retry in {math.ceil(wait)} s (nothing was stored)",
                            headers={"Retry-After": str(math.ceil(wait))})


def create_app(service: Service) -> FastAPI:
    """The API around a started `Service`."""
    app = FastAPI(title="lifelong", version=lifelong.__version__,
                  description="A model that keeps learning from feedback while it serves, with gated, versioned, "
                              "reversible updates. Send the API key in `X-API-Key` (or as a bearer token).",
                  docs_url=None, redoc_url=None)  # served from local files below: no CDN
    add_offline_docs(app)
    metrics = Metrics(service)
    rate = RateLimit(service.config.feedback_rate) if service.config.feedback_rate else None
    app.add_middleware(BodyLimit, max_bytes=service.config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last: outermost, so it counts 413s too

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the default echoes the input back, which may hold values JSON cannot carry (NaN)
        errors: list[dict[str, Any]] = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()]
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind:
            errors.insert(0, {"loc": ["header", "content-type"], "type": "content_type",
                              "msg": f"send the body as JSON with Content-Type: application/json (got {kind!r})"})
        return JSONResponse({"detail": errors}, status_code=422)

    def role(needed: str) -> Callable[..., Principal]:
        def check(key: Annotated[str | None, Security(_api_key)],
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Principal:
            secret = key or (bearer.credentials if bearer else None)
            if not secret:
                raise HTTPException(401, "an API key is needed: send it in the X-API-Key header",
                                    headers={"WWW-Authenticate": "Bearer"})
            who = service.auth.identify(secret)
            if who is None:
                raise HTTPException(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            if not allows(who.role, needed):
                raise HTTPException(403, f"this needs the {needed} role; the key has the {who.role} role")
            return who
        return check

    reader, contributor, maintainer = (Depends(role(r)) for r in ("reader", "contributor", "maintainer"))

    @app.get("/health", response_model=Health, summary="liveness and the version served (no key needed)")
    def health() -> Health:
        return Health(status="ok", version=service.current.version)

    @app.post("/predict", response_model=PredictReply, summary="predict labels (reader)")
    def predict(body: PredictRequest, _who: Principal = reader) -> PredictReply:
        served = service.current  # one version answers the whole request
        try:
            predictions = served.predict(body.inputs, body.task)
        except InputError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        metrics.predictions.inc(len(predictions))
        return PredictReply.model_validate({"version": served.version, "predictions": predictions})

    @app.post("/feedback", status_code=202, response_model=FeedbackReply,
              summary="store labelled examples for the next update (contributor); replies once they are durable")
    def feedback(body: FeedbackRequest, who: Principal = contributor) -> FeedbackReply:
        served = service.current
        examples = [e.model_dump() for e in body.examples]
        try:
            for i, example in enumerate(examples):
                served.check_example(example, i)
        except InputError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if rate is not None:  # after the checks: a request refused for its content costs the key nothing
            rate.check(who.key_id, len(examples))
        ids = service.store.add_feedback(examples, body.source, who.key_id)  # committed (and synced) here
        metrics.feedback.inc(len(ids))
        return FeedbackReply(accepted=len(ids), ids=ids)

    @app.get("/feedback", response_model=FeedbackList,
             summary="feedback by status, oldest first: ?status=held lists what the screens held, with reasons "
                     "(maintainer)")
    def list_feedback(status: FeedbackStatus | None = None,
                      after: Annotated[int, Query(ge=0, le=2**31 - 1, description="only ids above this")] = 0,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      _who: Principal = maintainer) -> FeedbackList:
        rows = service.store.feedback(status=status, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return FeedbackList(items=[_feedback_item(f) for f in rows], next_after=rows[-1].id if more else None)

    def _decide(feedback_id: int, status: str, who: Principal) -> FeedbackItem:
        try:
            return _feedback_item(service.store.decide_feedback(feedback_id, status, who.key_id))
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/feedback/{feedback_id}/approve", response_model=FeedbackItem,
              summary="let a held (or rejected) example through: the next update trains on it (maintainer)")
    def approve_feedback(feedback_id: Id, who: Principal = maintainer) -> FeedbackItem:
        return _decide(feedback_id, "approved", who)

    @app.post("/feedback/{feedback_id}/reject", response_model=FeedbackItem,
              summary="refuse an example no update has taken: it is never trained on (maintainer)")
    def reject_feedback(feedback_id: Id, who: Principal = maintainer) -> FeedbackItem:
        return _decide(feedback_id, "rejected", who)

    @app.post("/updates", status_code=202, response_model=UpdateCreated,
              summary="start a learning round on the pending feedback (maintainer)")
    def create_update(body: Annotated[UpdateRequest | None, Body()] = None,
                      who: Principal = maintainer) -> UpdateCreated:
        try:
            update_id, created = service.request_update(body.model_dump() if body else {}, who.key_id)
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return UpdateCreated(update_id=update_id, created=created)

    @app.get("/updates/{update_id}", response_model=UpdateInfo, summary="an update's status and report (reader)")
    def get_update(update_id: Id, _who: Principal = reader) -> UpdateInfo:
        update = service.store.update(update_id)
        if update is None:
            raise HTTPException(404, f"there is no update {update_id}")
        if update.status == "promoted":
            service.follow()  # whoever has seen it promoted gets the new version from this process next
        return _update_info(update)

    @app.get("/versions", response_model=Versions, summary="every kept version (reader)")
    def list_versions(_who: Principal = reader) -> Versions:
        current = service.store.current_version()
        return Versions(current=current, versions=[_version_info(v, current) for v in service.store.versions()])

    @app.get("/versions/{n}", response_model=VersionInfo, summary="one version with its report and model (reader)")
    def get_version(n: Id, _who: Principal = reader) -> VersionInfo:
        version = service.store.version(n)
        if version is None:
            raise HTTPException(404, f"there is no version {n}")
        try:
            config = json.loads(service.versions.read_text(version.path, CONFIG))
            model = spec_summary(ModelSpec.from_dict(config))
        except (OSError, ValueError):
            model = None
        return _version_info(version, service.store.current_version(), detail=True, model=model)

    def _set_current(n: int, who: Principal, rollback: bool) -> VersionInfo:
        try:
            version = service.set_current(n, who.key_id, rollback)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except CheckpointError as exc:
            raise HTTPException(409, f"version {n} cannot be served: {exc}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return _version_info(version, n)

    @app.post("/versions/{n}/promote", response_model=VersionInfo,
              summary="make any kept version current, a rejected candidate too (maintainer)")
    def promote(n: Id, who: Principal = maintainer) -> VersionInfo:
        return _set_current(n, who, rollback=False)

    @app.post("/rollback", response_model=VersionInfo, summary="go back to a version promoted before (maintainer)")
    def rollback(body: RollbackRequest, who: Principal = maintainer) -> VersionInfo:
        return _set_current(body.version, who, rollback=True)

    @app.get("/metrics", summary="Prometheus metrics, text format (reader)",
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    def get_metrics(_who: Principal = reader) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    add_page_routes(app, service)
    return app
