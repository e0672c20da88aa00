"""What token replay's memory holds of each fact batch in the `facts` setting (no training).

    python benchmarks/lm_facts_memory.py [--select random,distinct] [--seed 0]

Replays the memory's bookkeeping exactly as a run does (the same stream, the same windows handed to
`after_task` after each task, the setting's 1 % budget) and prints, for each fact batch while the last
batch trains (tasks 0..9 in memory), how many windows it keeps, how many of its 80 distinct taught
lines lie whole in some window, and how many of its 20 facts keep a whole line at all and keep their
trained question line. Also how many replayed windows a step gives each old task.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
from lm import SETTINGS, _options

from lifelong.data.corpora import decode
from lifelong.data.facts import FactWorld
from lifelong.data.task import BatchLoader, TaskData
from lifelong.lm.run import LMRunConfig, build_stream
from lifelong.strategies.token_replay import TokenReplay, TokenReplayConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--select", default="random,distinct")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = replace(SETTINGS["facts"]["data"])
    tokens = _options("facts", "gpt-1m", "replay", {})[1]["tokens"]
    stream = build_stream(LMRunConfig("facts", "gpt-1m", "token-replay", {}, data, seed=args.seed))
    world = FactWorld(data.facts)
    last = len(stream) - 1
    taught = sum(len(x) + 1 for f in world.batches[0] for x in world.taught(f))
    print(f"budget {tokens:,} tokens; a batch's taught text {taught:,} "
          f"bytes ({4 * len(world.batches[0])} lines); replayed windows a step: {data.batch_size}, "
          f"{data.batch_size / last:.1f} per old task while batch {last} trains\n")
    print("| select | batch | windows kept | taught lines kept whole | facts with a whole line | "
          "facts with their question line |")
    print("|---|---|---|---|---|---|")
    for select in args.select.split(","):
        replay = TokenReplay(TokenReplayConfig(tokens=tokens, select=select, seed=args.seed))
        for t in range(last):  # what memory holds while the last batch trains, as a run hands it over
            own = BatchLoader([TaskData(stream[t].train, t)], 16, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed * 1000 + t if t else args.seed),
                              device=torch.device("cpu"))  # task 0: lifelong.lm.run's own loader
            replay.after_task(None, t, own)
        for t in range(1, last):
            facts = world.batches[t - 1]
            lines = {line for f in facts for line in world.taught(f)}
            whole = {x for w in replay.windows[t] for x in decode(w).split("\n")[1:-1] if x in lines}
            print(f"| {select} | {t} | {len(replay.windows[t])} | {len(whole)}/{len(lines)} | "
                  f"{sum(any(x in whole for x in world.taught(f)) for f in facts)}/{len(facts)} | "
                  f"{sum(world.taught(f)[3] in whole for f in facts)}/{len(facts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
