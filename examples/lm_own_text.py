"""A GPT that keeps learning your own text: each file or folder is a task, learned in turn.

    python examples/lm_own_text.py notes/2024 notes/2025 --strategy token-replay --save gpt.pt
    python examples/lm_own_text.py a.txt b.txt --strategy naive          # to see what it forgets

Prints next-byte accuracy on every text's held-out end after each one is learned (the accuracy matrix),
then final, learning accuracy and retention. The strategies are the library's: `token-replay` replays
stored windows of earlier texts (65,536 bytes of them by default, `--options '{"tokens": N}'`), and
`online-kfac-ewc`, `ewc`, `lm-distill` and their `+` compositions run on the GPT too; what each kept on
the benchmarks is in docs/language-models.md. `--init` starts from a
saved GPT (this script's `--save`, or a pre-trained one of `benchmarks/lm.py` in ~/.cache/lifelong/lm).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys

import torch

from lifelong.atomic import torch_save
from lifelong.data.corpora import decode, encode
from lifelong.data.lm import LMDataConfig, read_text, text_stream
from lifelong.evaluation import AccuracyMatrix
from lifelong.learner import LearnerConfig
from lifelong.lm import LMLearner
from lifelong.models.gpt import GPT, PRESETS, gpt_config
from lifelong.strategies import build_strategy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="+", help="files or folders, one task each, in the order they are learned")
    p.add_argument("--model", default="gpt-1m", choices=sorted(PRESETS), help="GPT size (default: gpt-1m)")
    p.add_argument("--strategy", default="token-replay", help="e.g. naive, online-kfac-ewc+token-replay")
    p.add_argument("--options", default="{}", help='the strategy\'s options as JSON, e.g. \'{"tokens": 65536}\'')
    p.add_argument("--steps", type=int, default=250, help="optimizer steps per text")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=128, help="bytes per window (the model's context)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="a saved GPT state dict to start from")
    p.add_argument("--save", default=None, help="write the GPT's state dict here after the last text")
    p.add_argument("--prompt", default=None, help="print the model's continuation of this text at the end")
    p.add_argument("--json", action="store_true", help="print the matrix and metrics as JSON")
    args = p.parse_args(argv)
    try:
        options = json.loads(args.options)
        texts = {str(path): read_text(path) for path in args.texts}
        data = LMDataConfig(length=args.length, batch_size=args.batch_size, steps=args.steps, pretrain_steps=0,
                            seed=args.seed)
        stream = text_stream(texts, data)
        strategy = build_strategy(args.strategy, {**options, "seed": args.seed})
    except (ValueError, OSError, KeyError) as e:  # bad JSON, a missing file, a short text, an unknown strategy
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    model = GPT(gpt_config(args.model, block_size=args.length))
    if args.init:
        try:
            saved = torch.load(args.init, map_location="cpu", weights_only=True)
            model.load_state_dict(saved.get("model", saved))  # a benchmark cache keeps it under "model"
        except (OSError, RuntimeError, AttributeError, KeyError, pickle.UnpicklingError) as e:  # missing, corrupt, size
            print(f"error: --init {args.init} is not a {args.model} state dict ({str(e).splitlines()[0]})",
                  file=sys.stderr)
            return 2
    learner = LMLearner(model, strategy, LearnerConfig(batch_size=args.batch_size, lr=args.lr, optimizer="adam",
                                                       seed=args.seed))
    matrix = AccuracyMatrix(len(stream))
    for t, task in enumerate(stream):
        learner.fit(stream, t)
        matrix.update(t, learner.evaluate(stream))
        if not args.json:
            row = "  ".join(f"{a:.3f}" for a in matrix.values[t])
            print(f"after {task.name}: next-byte accuracy  {row}", flush=True)
    metrics = matrix.compute()
    if args.save:
        torch_save(args.save, {k: v.cpu() for k, v in model.state_dict().items()})
    if args.json:
        print(json.dumps({"tasks": [t.name for t in stream], "matrix": matrix.tolist(),
                          "metrics": metrics, "model": args.model, "strategy": args.strategy, "options": options}))
    else:
        print(f"final {metrics['average_accuracy']:.3f}  learning {metrics['learning_accuracy']:.3f}  "
              f"retention {metrics['average_retention']:.3f}" + (f"  saved {args.save}" if args.save else ""))
    if args.prompt:
        prompt = encode(args.prompt)
        out = model.generate(prompt.unsqueeze(0), 80, temperature=0)
        print(decode(out[0, len(prompt):]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
