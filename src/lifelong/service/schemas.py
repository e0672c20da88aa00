"""Request and reply bodies of the HTTP API (pydantic): they are the OpenAPI schema at /docs.

Inputs are strings (text models, and pictures as base64 PNG or JPEG for image models) or nested lists
of numbers (array models); which one a model takes, and its shape, is checked against the served
version (inputs.py), not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ITEMS = 1000  # inputs per prediction, examples per feedback request

Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 Field(description="a class name (spaces around it are dropped); a new one is a new class")]
Input = Annotated[str | list[Any], Field(description="a string (text models), the base64 of a PNG or JPEG file "
                                                     "(image models), or a nested list of numbers shaped like one "
                                                     "training sample (array models; image models: pixels 0-255)")]
Task = Annotated[int | None, Field(default=None, ge=0, le=1_000_000, description="a task the model has learned")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    inputs: list[Input] = Field(min_length=1, max_length=MAX_ITEMS)
    task: Task = None


class Prediction(BaseModel):
    label: str
    score: float = Field(description="the model's probability for that label")


class PredictReply(BaseModel):
    version: int = Field(description="the version that made these predictions")
    predictions: list[Prediction]


class Example(Strict):
    input: Input
    label: Label
    task: Task = None


class FeedbackRequest(Strict):
    examples: list[Example] = Field(min_length=1, max_length=MAX_ITEMS)
    source: str | None = Field(default=None, max_length=200, description="where the examples come from")


class FeedbackReply(BaseModel):
    accepted: int
    ids: list[int]


class HoldReason(BaseModel):
    screen: str = Field(description="source-share, label-noise, source-outlier, backdoor, label-collision, "
                                    "guard-agreement or influence")
    reason: str
    score: float = Field(description="how sure the screen is (larger: surer)")


class FeedbackItem(BaseModel):
    id: int
    status: str = Field(description="pending, held (by the screens), approved, rejected or used (by an update)")
    label: str
    input: Any
    task: int | None
    source: str | None
    key_id: int | None = Field(description="the API key that sent it")
    update_id: int | None = Field(description="the update that took it (and, if held, screened it)")
    created_at: datetime
    reasons: list[HoldReason] | None = Field(description="why the screens held it")


class FeedbackList(BaseModel):
    items: list[FeedbackItem]
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last page")


class UpdateRequest(Strict):
    strategy: str | None = Field(default=None, max_length=100,
                                 description="default: the service's (ewc+replay unless set at start)")
    options: dict[str, float | int | str | bool] | None = Field(
        default=None, description="options of a strategy other than the current version's (started fresh)")
    epochs: int | None = Field(default=None, ge=1, le=200)
    lr: float | None = Field(default=None, gt=0, le=10)
    batch_size: int | None = Field(default=None, ge=1, le=4096)


class UpdateCreated(BaseModel):
    update_id: int
    created: bool = Field(description="false when an update was already queued (it takes this feedback too)")


class UpdateInfo(BaseModel):
    id: int
    status: str = Field(description="queued, training, evaluating, promoted, rejected or failed")
    report: dict[str, Any] | None = Field(description="the gate's report: accuracy matrix, checks, failures")
    error: str | None
    options: dict[str, Any]
    parent_version: int | None
    candidate_version: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class VersionInfo(BaseModel):
    number: int
    status: str = Field(description="promoted (at some time) or rejected (a candidate kept for inspection)")
    current: bool
    parent: int | None
    update_id: int | None
    created_at: datetime
    promoted_at: datetime | None
    feedback_ids: list[int] = Field(description="the feedback examples it learned from")
    report: dict[str, Any] | None = None
    model: dict[str, Any] | None = Field(default=None, description="input, labels, tasks, strategy")


class Versions(BaseModel):
    current: int
    versions: list[VersionInfo]


class RollbackRequest(Strict):
    version: int = Field(ge=1, le=2**31 - 1)


class Health(BaseModel):
    status: str
    version: int
