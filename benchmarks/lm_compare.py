"""Per-seed differences between two methods' runs: what a mean ± spread over seeds hides, and what a claim
"A beats B on every seed" rests on.

    python benchmarks/lm.py compare --sizes gpt-16m --device cpu --also results/lm-domains-gpt-16m-cpu.json \\
        --against replay distill+replay ewc+replay
    python benchmarks/lm.py compare --against equal-bytes ewc ewc+replay distill+replay

A method named alone is its runs at the options it is configured with at each size now (validation's
choice, the table's and the figure's row; all its runs where none is at those options, as for a control
`replay@METHOD`); `METHOD:option=value[:option=value]` is its runs whose options include those values,
whatever is configured (`replay:tokens=247680000`; `OPTION=null` is an option left at its default, as in
`replay:tokens=6192000:replay_batch=null`, to tell a run from one that sets it). `--against
equal-bytes` pairs each run with its own equal-bytes control (`replay@METHOD`, given the run's stored bytes,
in the same model), or, where it has none, a run of that configuration from the same pre-trained model (every
method that stores more than the whole text shares one: lm_plan.equal_bytes_control). Runs pair by size and
seed; a seed where either side has no run is shown and not counted.
A pair counts as starting from one model when both runs name the same pre-trained weights (their fingerprint),
or, for runs saved before that was recorded, score the same before the first domain (row 0 of the matrix):
`same start` says on how many seeds that holds, since a pre-training redone elsewhere is another model.
Where `--against` has several runs for a seed (one per pre-trained model, from two files), the one that
shares the method's start is taken; the method's own runs must be one per seed (pass the files that hold them).
"""

from __future__ import annotations

from typing import Any

from lm_jobs import run_key
from lm_plan import equal_bytes_control, parse_sets, same_run_key
from lm_report import _devices, _shown

EQUAL_BYTES = "equal-bytes"


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'replay:tokens=24768:lr=0.001' -> ('replay', {'tokens': 24768, 'lr': 0.001}), values read as `--set`'s."""
    method, *pairs = spec.split(":")
    bad = [p for p in pairs if "=" not in p or "," in p]
    if not method or bad:
        raise SystemExit(f"a method to compare is METHOD or METHOD:OPTION=VALUE[:OPTION=VALUE], not {spec!r}")
    options: dict[str, Any] = {}
    for pair in pairs:
        options.update(parse_sets([pair])[0])
    return method, options


def _matching(spec: str, runs: list[dict[str, Any]], configured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    method, options = parse_spec(spec)
    pool = [r for r in (runs if options or not any(c["method"] == method for c in configured) else configured)
            if r["method"] == method]
    return [r for r in pool if all(_shown(r["config"]).get(k) == v for k, v in options.items())]


def _one(found: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    if len(found) > 1:
        seen = "; ".join(f"{_shown(r['config'])} on {r['config'].get('device', 'cpu')}" for r in found)
        raise SystemExit(f"{what} is more than one run ({seen}): name the options (METHOD:OPTION=VALUE) "
                         "or the device (--device)")
    return found[0] if found else None


def same_start(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Did the two runs start from the same pre-trained model?"""
    wa, wb = a.get("pretrain", {}).get("weights"), b.get("pretrain", {}).get("weights")
    return wa == wb if wa and wb else a["scores"][0] == b["scores"][0]


def _partner(run: dict[str, Any], found: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    """The one run of `found` to set beside `run`: where there are several (the same configuration trained from
    two pre-trained models, in two files), the one that shares `run`'s start."""
    same = [r for r in found if same_start(run, r)]
    return _one(same if len(found) > 1 and same else found, what)


def _control(run: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's equal-bytes control: token replay given its stored bytes (lm_plan.equal_bytes_control), in
    the same model. The run's own (`replay@METHOD`) first; where it has none, a run of the same configuration
    asked for another method stands in, if it started from the same pre-trained model."""
    c = run["config"]
    key = run_key({"config": equal_bytes_control(run)})
    found = [r for r in runs if same_run_key(r) == key]
    own = [r for r in found if r["method"] == f"replay@{run['method']}"]
    what = f"the equal-bytes control of {run['method']} at {c['model']}, seed {c['seed']}"
    return _partner(run, own, what) if own else _one([r for r in found if same_start(run, r)], what)


def compare(runs: list[dict[str, Any]], configured: list[dict[str, Any]], method: str, against: str,
            metric: str = "average_accuracy", sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per size: `method`'s metric minus `against`'s, seed by seed."""
    a_runs = _matching(method, runs, configured)
    b_runs = [] if against == EQUAL_BYTES else _matching(against, runs, configured)
    rows = []
    for size in sizes or list(dict.fromkeys(r["config"]["model"] for r in a_runs)):
        at = [r for r in a_runs if r["config"]["model"] == size]
        b_at = [r for r in b_runs if r["config"]["model"] == size]
        seeds = sorted({r["config"]["seed"] for r in at})
        pairs = []
        for seed in seeds:
            a = _one([r for r in at if r["config"]["seed"] == seed], f"{method} at {size}, seed {seed}")
            assert a is not None  # the seeds are those of `at`'s runs
            b = _control(a, runs) if against == EQUAL_BYTES else _partner(
                a, [r for r in b_at if r["config"]["seed"] == seed], f"{against} at {size}, seed {seed}")
            pairs.append((seed, a, b))
        if not pairs:
            continue
        for _, a, b in pairs:
            for r in (a, b):
                if r is not None and metric not in r["metrics"]:
                    raise SystemExit(f"no metric {metric!r} in the runs; they have {', '.join(sorted(r['metrics']))}")
        diffs = [None if b is None else a["metrics"][metric] - b["metrics"][metric] for _, a, b in pairs]
        done = [d for d in diffs if d is not None]
        rows.append({
            "model": size, "method": method, "against": against, "metric": metric,
            "devices": f"{_devices([a for _, a, _ in pairs])} / "
                       f"{_devices([b for _, _, b in pairs if b is not None]) if done else '-'}",
            "seeds": [s for s, _, _ in pairs], "differences": diffs,
            "mean": sum(done) / len(done) if done else None, "ahead": sum(d > 0 for d in done), "paired": len(done),
            "same_start": sum(same_start(a, b) for _, a, b in pairs if b is not None)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def signed(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.3f}"

    lines = ["| model | method | against | metric | devices | seeds | method - against, per seed | mean | ahead on "
             "| same start |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['against']} | {r['metric']} | {r['devices']} | "
                     f"{', '.join(map(str, r['seeds']))} | {', '.join(signed(d) for d in r['differences'])} | "
                     f"{signed(r['mean'])} | {r['ahead']} of {r['paired']} | {r['same_start']} of {r['paired']} |")
    return "\n".join(lines)
