"""`lifelong data`: data sets by name (`fetch`, `list`) and a look at a `--data` spec (`show`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lifelong.data.registry import NAMES


def add_commands(sub: Any) -> None:
    """Add `data` and its actions to the `lifelong` command's subparsers."""
    data = sub.add_parser("data", help="data sets by name: fetch, list; show what a --data spec makes",
                          description="Fetch the benchmarks' data sets into one data folder ($LIFELONG_DATA, else "
                          "~/.local/share/lifelong), see where each is found, or check a --data spec.")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download and verify a data set (or say what to download by hand)")
    fetch.add_argument("name", choices=NAMES)
    fetch.add_argument("--dir", metavar="DIR", help="put it here instead of the data folder's NAME/")
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds per connection (default: %(default)s)")
    actions.add_parser("list", help="each data set, and where the benchmarks find it")
    show = actions.add_parser("show", help="read a --data spec and print the tasks it makes (nothing is trained)")
    show.add_argument("spec", metavar="SPEC")
    show.add_argument("--scenario", choices=("task", "domain", "class"))
    show.add_argument("--tasks", type=int)
    show.add_argument("--classes-per-task", type=int)
    show.add_argument("--class-order", choices=("fixed", "random"), default="fixed")
    show.add_argument("--validation", type=float, default=0.0)
    show.add_argument("--encoder", choices=("frozen", "finetune", "lora"), default="frozen")


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a `data` action; its exit code (2: a bad spec or argument, 1: a data set that cannot be had)."""
    from lifelong.data import registry

    if args.data_command == "list":
        print(f"data folder: {registry.data_root()} (set {registry.DATA_ENV} to move it)")
        for name, data in registry.DATASETS.items():
            found, how = registry.status(name)
            print(f"  {name:<14} {found if found else how}\n  {'':<14} {data.description}; license {data.license}")
        return 0
    if args.data_command == "show":
        from lifelong.data.files import Cut, describe, file_stream
        from lifelong.data.spec import SpecError

        try:
            stream = file_stream(args.spec, Cut(args.scenario, args.tasks, args.classes_per_task, args.class_order,
                                                0, args.validation), args.encoder)
        except SpecError as exc:
            parser.error(str(exc))
        print(describe(stream))
        return 0
    try:
        where = registry.fetch(args.name, Path(args.dir) if args.dir else None, args.timeout,
                               say=lambda line: print(line, file=sys.stderr))
    except registry.FetchError as exc:
        print(f"lifelong: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} is in {where}; license {registry.DATASETS[args.name].license}")
    if args.dir and Path(args.dir).resolve() != registry.folder(args.name).resolve():
        print(f"the benchmarks read it from there with --data-dir {args.dir}", file=sys.stderr)
    return 0
