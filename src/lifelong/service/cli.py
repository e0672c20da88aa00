"""`lifelong serve`, `lifelong worker` and `lifelong keys`: arguments -> ServiceConfig / Store calls.

Importing this module imports no web or database package, so `lifelong run` works without the
`service` extra; `serve` and `keys` say what to install when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("serve", "keys", "worker")
ROLES = ("reader", "contributor", "maintainer")
SCREENS = ("source-share", "label-noise", "source-outlier", "backdoor", "label-collision",
           "guard-agreement", "influence")  # lifelong.screening.SCREENS, without torch
_MISSING = "the service needs the service extra: pip install 'lifelong[service]' ({})"


def _store_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", metavar="DIR", help="the served model directory (its SQLite store is beside it)")
    where.add_argument("--db", metavar="URL", help="the store's URL (sqlite:///FILE or postgresql://...)")


def add_commands(sub: Any) -> None:
    """Add `serve` and `keys` to the `lifelong` command's subparsers."""
    serve = sub.add_parser("serve", help="serve a saved model that keeps learning from feedback",
                           description="Serve a model saved with `lifelong run --save DIR` over HTTP (OpenAPI page "
                           "at /docs): predictions, feedback, gated updates, versions and rollback.")
    serve.add_argument("--model", metavar="DIR", required=True, help="a model directory from `lifelong run --save`")
    serve.add_argument("--db", metavar="URL", help="database URL (default: SQLite file DIR.service.db beside the "
                       "model; postgresql://user@host/db to share one store between several processes)")
    serve.add_argument("--versions-dir", metavar="DIR|URL", help="where versions are kept: a folder (default: "
                       "DIR.versions) or an fsspec URL (s3://bucket/path, ...) that replicas on several machines share")
    serve.add_argument("--updates", choices=("here", "workers"), default="here",
                       help="who runs updates: this process (in a child process, one at a time), or `lifelong worker` "
                       "processes sharing --db (for several replicas; default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--auto-update", type=int, metavar="K", help="start an update every K pending examples")
    serve.add_argument("--max-body-bytes", type=int, default=4 * 2**20, metavar="N",
                       help="larger request bodies get 413 (default: 4 MiB)")
    u = serve.add_argument_group("updates")
    u.add_argument("--update-strategy", default="ewc+replay",
                   help="strategy an update trains with (default: %(default)s; the current version's state carries "
                   "over when it is the same strategy)")
    u.add_argument("--update-epochs", type=int, default=10, help="epochs over the new feedback (default: 10)")
    u.add_argument("--update-lr", type=float, help="learning rate (default: the model's own)")
    u.add_argument("--update-batch-size", type=int, default=32)
    u.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy a guard set may lose before the gate rejects (default: 0.01, one point)")
    u.add_argument("--holdout", type=float, default=0.2, help="share of new feedback held out for the gate")
    q = serve.add_argument_group("quarantine", "feedback is screened before an update trains on it; what the "
                                 "screens flag is held for a maintainer (GET /feedback?status=held)")
    q.add_argument("--screens", default=",".join(SCREENS), metavar="LIST",
                   help=f"comma-separated screens to run (default: all of {','.join(SCREENS)})")
    q.add_argument("--no-screen", action="store_true", help="screen nothing: every example is trained on")
    q.add_argument("--max-source-share", type=float, default=0.1, metavar="F",
                   help="most of one update's examples one API key may provide (default: %(default)s; the "
                   "source-share screen holds the excess)")
    q.add_argument("--feedback-rate", type=int, default=1200, metavar="N",
                   help="feedback examples per minute one API key may send (default: %(default)s; more get 429; "
                   "0: no limit). Counted in this process")
    serve.add_argument("--trust-code", action="store_true", help="serve a model whose network is built by a "
                       "module:function factory of yours (loading imports and runs that code)")
    serve.add_argument("--threads", type=int, default=1, help="torch threads for predictions (default: 1)")
    serve.add_argument("--device", default="cpu", help="where the served model predicts: cpu, auto, cuda, cuda:N or "
                       "mps (default: %(default)s; updates train on the CPU)")
    serve.add_argument("--access-log", action="store_true", help="log every request")

    worker = sub.add_parser("worker", help="run the updates that `serve --updates workers` replicas queue",
                            description="Claim queued updates from the service's PostgreSQL (or SQLite) store and run "
                            "them: train, gate, write the version, promote. Start several, on any machine that reaches "
                            "the database and the version store; an update whose worker dies is queued again.")
    worker.add_argument("--db", metavar="URL", required=True, help="the replicas' database (postgresql://...)")
    worker.add_argument("--versions-dir", metavar="DIR|URL", required=True, help="the replicas' version store")
    worker.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between looks at the queue")
    worker.add_argument("--max-attempts", type=int, default=2, metavar="N",
                        help="starts of an update whose worker keeps dying before it fails (default: %(default)s)")
    worker.add_argument("--once", action="store_true", help="run at most one update, then exit")
    worker.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    worker.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    worker.add_argument("--trust-code", action="store_true", help="load networks built by module:function factories")

    keys = sub.add_parser("keys", help="API keys of a service: add, list, revoke",
                          description="Manage API keys. Only their hashes are stored; a new key is shown once.")
    ks = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    add = ks.add_parser("add", help="make a key and print it (once)")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--name", default="", help="who or what the key is for")
    _store_flags(add)
    _store_flags(ks.add_parser("list", help="list keys (id, role, name, created, revoked)"))
    revoke = ks.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    _store_flags(revoke)


def _store(args: argparse.Namespace) -> Any:
    from lifelong.service.database import default_url
    from lifelong.service.store import Store

    store = Store(args.db or default_url(args.model))
    store.migrate()
    return store


def _keys(args: argparse.Namespace) -> int:
    from lifelong.service.auth import hash_key, new_key

    store = _store(args)
    try:
        if args.keys_command == "add":
            key = new_key()
            key_id = store.add_key(args.role, hash_key(key), args.name)
            print(f"key {key_id} ({args.role}): {key}")
            print("keep it now: only its hash is stored", file=sys.stderr)
        elif args.keys_command == "list":
            print(f"{'id':>4}  {'role':<12} {'created (UTC)':<20} {'revoked':<20} name")
            for k in store.api_keys():
                revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-"
                print(f"{k.id:>4}  {k.role:<12} {k.created_at:%Y-%m-%d %H:%M:%S}  {revoked:<20} {k.name}")
        elif not store.revoke_key(args.id):
            print(f"lifelong: error: there is no active key {args.id}", file=sys.stderr)
            return 1
        else:
            print(f"key {args.id} revoked")
    finally:
        store.close()
    return 0


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch
    import uvicorn

    from lifelong.service.app import create_app
    from lifelong.service.runtime import Service, ServiceConfig
    from lifelong.service.screening import screen_config
    from lifelong.service.worker import UpdateSettings

    for name, value, low in (("--auto-update", args.auto_update, 1), ("--max-body-bytes", args.max_body_bytes, 1024),
                             ("--update-epochs", args.update_epochs, 1), ("--update-batch-size",
                                                                          args.update_batch_size, 1)):
        if value is not None and value < low:
            parser.error(f"{name} must be at least {low}")
    if not 0 <= args.tolerance <= 1 or not 0 < args.holdout < 1:
        parser.error("--tolerance must be in [0, 1] and --holdout in (0, 1)")
    if args.feedback_rate < 0:
        parser.error("--feedback-rate must be at least 0 (0: no limit)")
    if not args.trust_code and _runs_code(Path(args.model)):
        parser.error(f"{args.model} builds its network by running code ({_runs_code(Path(args.model))}); "
                     "serve it only if you trust that code: add --trust-code")
    try:
        screens = [] if args.no_screen else [n.strip() for n in args.screens.split(",") if n.strip()]
        screening = screen_config(screens, args.max_source_share)
    except ValueError as exc:
        parser.error(str(exc))
    from lifelong.strategies import strategy_options

    try:
        strategy_options(args.update_strategy)
    except ValueError as exc:
        parser.error(f"--update-strategy: {exc}")
    from lifelong.devices import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    settings = UpdateSettings(strategy=args.update_strategy, epochs=args.update_epochs, lr=args.update_lr,
                              batch_size=args.update_batch_size, holdout=args.holdout, tolerance=args.tolerance,
                              screening=screening.to_dict() if screening else None)
    from lifelong.service.versions import is_url

    versions = None if not args.versions_dir else args.versions_dir if is_url(args.versions_dir) else Path(
        args.versions_dir)
    config = ServiceConfig(Path(args.model), args.db, versions, args.host, args.port, args.auto_update,
                           args.max_body_bytes, settings, feedback_rate=args.feedback_rate or None,
                           updates=args.updates, device=args.device,
                           trust_code=args.trust_code)
    service = Service(config)
    try:
        service.start()
    except Exception as exc:  # a bad model directory or an unreachable database: say so, no traceback
        print(f"lifelong: error: cannot start the service: {exc}", file=sys.stderr)
        return 1
    try:
        served = service.current
        print(f"lifelong: serving version {served.version} ({served.spec.input['kind']} input, "
              f"{len(served.labels)} labels, {served.num_tasks} tasks) on http://{args.host}:{args.port} "
              f"(OpenAPI at /docs)", file=sys.stderr, flush=True)
        if screening is None:
            print("lifelong: note: feedback is not screened (--no-screen): every example is trained on",
                  file=sys.stderr)
        if not service.store.api_keys():
            print(f"lifelong: no API keys yet: make one with `lifelong keys add --role maintainer --model "
                  f"{args.model}`", file=sys.stderr)
        if args.updates == "workers":
            print("lifelong: updates are run by `lifelong worker` processes (none is started here)", file=sys.stderr)
        if served.spec.strategy != settings.strategy:
            print(f"lifelong: note: the model was trained with {served.spec.strategy}; updates will start "
                  f"{settings.strategy} fresh (give --update-strategy {served.spec.strategy} to carry its state)",
                  file=sys.stderr)
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning",
                    access_log=args.access_log, timeout_graceful_shutdown=5)
    finally:
        service.stop()
    return 0


def _runs_code(model_dir: Path) -> str:
    """The module:function reference a saved model's network is built by ("" when none, or unreadable:
    loading then says what is wrong)."""
    import json

    try:
        network = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["network"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return str(network.get("source", "")) if isinstance(network, dict) and network.get("kind") == "factory" else ""


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `serve` or `keys`; exit code."""
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        print(f"lifelong: error: {_MISSING.format(exc.name)}", file=sys.stderr)
        return 1
    if args.command == "keys":
        try:
            return _keys(args)
        except Exception as exc:
            print(f"lifelong: error: {exc}", file=sys.stderr)
            return 1
    if args.command == "worker":
        return _worker(args, parser)
    return _serve(args, parser)


def _worker(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lifelong.service.updater import WorkerConfig, main

    if args.poll <= 0 or args.max_attempts < 1 or args.threads < 1:
        parser.error("--poll must be positive, --max-attempts and --threads at least 1")
    config = WorkerConfig(args.db, args.versions_dir, args.poll, args.max_attempts, args.once, args.threads, args.nice,
                          args.trust_code)
    try:
        return main(config)
    except Exception as exc:  # an unreachable database or version store: say so, no traceback
        print(f"lifelong: error: the worker stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
