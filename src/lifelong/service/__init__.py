"""Serve a model that keeps learning: predictions, feedback, gated updates, versions and rollback.

`lifelong serve --model DIR` serves a model saved by `lifelong run --save DIR` over HTTP (FastAPI
on uvicorn). Feedback is stored durably (SQLAlchemy: SQLite beside the model, or PostgreSQL by URL);
an update trains a candidate from the current version in a separate worker process, through the
library's one `Learner`, and the promotion gate (gate.py) promotes it only if no guard set lost more
than a tolerance. Before it trains, the update screens its feedback for poisoning (screening.py, with
`lifelong.screening`): flagged examples are held for a maintainer to approve or reject, never trained
on; a per-key rate limit refuses floods at intake. Every version is a saved model directory
(`lifelong.checkpoint`); rollback is a pointer in the database.

Modules: app.py (HTTP routes), schemas.py (request and reply bodies), auth.py (API keys and roles),
store.py and tables.py (the database; migrations/ creates it), runtime.py (the serving process:
current version, scheduling updates), serving.py (inputs -> predictions), worker.py (the update
process), screening.py (quarantine), gate.py (promotion checks), middleware.py (body limit, request
metrics), metrics.py (Prometheus), cli.py (`serve`, `keys`).
Needs the `service` extra.
"""
