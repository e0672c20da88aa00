"""The `lifelong` command's arguments: the parser of `run`, `compare` and `report`, with the service's and
the data commands' parsers attached. What the arguments become lives in cli_args.py; what runs, in cli.py."""

from __future__ import annotations

import argparse

from lifelong.data.streams import BENCHMARKS
from lifelong.learner import OPTIMIZERS
from lifelong.strategies import STRATEGIES


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("run config files (docs: README, Command line)")
    c.add_argument("--config", metavar="FILE",
                   help="start from the run configuration in FILE (.toml or .json: the keys `--dry-run` prints; "
                   "or a result file to re-run) instead of the preset; flags typed on the command line override it")
    c.add_argument("--run-index", type=int, metavar="N",
                   help="with --config: the run to take from a file of several runs (compare, benchmarks), from 0")
    d = p.add_argument_group("data")
    d.add_argument("--benchmark", choices=BENCHMARKS, default="split-digits", help="default: %(default)s")
    d.add_argument("--data", metavar="SPEC", help="your own data instead of a benchmark, e.g. csv:tickets.csv,"
                   "text=body,label=intent,task=product (see docs/your-data.md)")
    d.add_argument("--classes-per-task", type=int, help="streams cut by classes: classes per task (default: C // 5)")
    d.add_argument("--scenario", choices=("task", "domain", "class"),
                   help="default: the benchmark's own (split: task, permuted/rotated: domain)")
    d.add_argument("--tasks", type=int, help="number of tasks (default: 5 for split, 10 for permuted/rotated)")
    d.add_argument("--class-order", choices=("fixed", "random"), default="fixed",
                   help="split streams: classes in order, or shuffled by the seed")
    d.add_argument("--data-dir", help="folder with the Fashion-MNIST .gz files (default: $LIFELONG_DATA, "
                   "else /usr/share/datasets/fashion-mnist); for clinc150 the CLINC150 folder (default: "
                   "$LIFELONG_CLINC150, else shared/datasets/clinc150 beside the repository)")
    d.add_argument("--encoder", choices=("frozen", "finetune", "lora"), default="frozen",
                   help="clinc150: a frozen MiniLM encoder (cached embeddings), or one fine-tuned fully or "
                   "through LoRA adapters")
    d.add_argument("--per-intent", type=int, help="clinc150: training queries kept per intent (a small slice)")
    d.add_argument("--environments", help="control: comma-separated gymnasium ids (default: CartPole-v1,"
                   "Acrobot-v1,LunarLander-v3 for task; LunarLander-v3 with changing gravity and wind for domain)")
    d.add_argument("--mode", choices=("bc", "rl"), default="bc",
                   help="control: behaviour cloning from experts, or reinforcement learning (see --agent)")
    d.add_argument("--agent", choices=("dqn", "ppo"), default="dqn",
                   help="control, rl: double DQN, or PPO (the continual-RL benchmark's agent; docs/control.md)")
    d.add_argument("--rl-steps", type=int, default=50_000, help="control, rl: environment steps per task")
    d.add_argument("--demos", type=int, default=20, help="control, bc: expert episodes per task (default: 20)")
    d.add_argument("--eval-episodes", type=int, default=20, help="control: episodes per evaluation (default: 20)")
    d.add_argument("--validation", type=float, default=0.0,
                   help="hold out this share of each task's training data (e.g. 0.1)")
    d.add_argument("--eval-split", choices=("test", "valid"), default="test",
                   help="evaluate on the test set, or on the held-out validation part to tune")
    t = p.add_argument_group("training (default: the benchmark's preset, the regime of its README table)")
    t.add_argument("--no-preset", action="store_true",
                   help="start from the library's plain defaults instead of the benchmark's preset")
    t.add_argument("--epochs", type=int, help="epochs per task (no preset: 1)")
    t.add_argument("--batch-size", type=int, help="(no preset: 128)")
    t.add_argument("--lr", type=float, help="learning rate (no preset: 1e-3 for Adam, 0.03 for SGD)")
    t.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="auto: the optimizer the strategy is defined with (SGD for A-GEM), else Adam; "
                        "adam-compiled: Adam as one compiled pass per tensor, EWC/SI/MAS's penalty folded in")
    t.add_argument("--momentum", type=float, help="sgd only (default: 0)")
    t.add_argument("--keep-optimizer", action="store_true", help="keep optimizer state across tasks")
    t.add_argument("--model", choices=("mlp", "cnn"), help="(no preset: mlp)")
    t.add_argument("--hidden", type=_ints, help="mlp: hidden widths, e.g. 400,400; cnn: width of its hidden fc "
                   "layer (no preset: 400,400)")
    t.add_argument("--dropout", type=float, help="(no preset: 0)")
    t.add_argument("--network", metavar="REF", help="your own network instead of --model: module:function (a "
                   "factory returning an nn.Module that maps inputs to feature vectors), torchvision:NAME, or "
                   "hf:FOLDER (a local Hugging Face model; text is tokenised by its own tokenizer)")
    t.add_argument("--network-option", action="append", default=[], metavar="KEY=VALUE",
                   help="module:function: a keyword argument for the factory (VALUE read as JSON; repeatable)")
    t.add_argument("--network-weights", metavar="FILE", help="torchvision: a local state dict to start from")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    t.add_argument("--device", default="cpu", help="where to train: auto (CUDA if present, else CPU), cpu, cuda, "
                   "cuda:N or mps (default: %(default)s)")
    t.add_argument("--autocast", choices=("none", "bf16"), default="none",
                   help="bf16: train in bfloat16 autocast (importance and the penalty stay fp32)")
    p.add_argument("--specialist", action="store_true",
                   help="also train one model per task alone and report retention against it")
    p.add_argument("--distributed", action="store_true",
                   help="train with DistributedDataParallel (start under torchrun; gloo on CPU, nccl on GPU)")
    p.add_argument("--fsdp", action="store_true", help="with --distributed: shard parameters and state (FSDP2)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration (preset, flags and --set applied) as JSON and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    o = p.add_argument_group("reports and training logs")
    o.add_argument("--report", metavar="DIR", help="also write an HTML report with its figures: DIR/index.html")
    o.add_argument("--log", action="append", choices=("csv", "tensorboard"), default=[],
                   help="log loss, penalty, step time and accuracy per task: csv (always available) or "
                   "tensorboard (needs the tensorboard package); repeatable")
    o.add_argument("--log-dir", default="runs", help="logs go to LOG_DIR/<strategy>-seed<seed>/ (default: runs)")


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("strategy options (each strategy has tuned defaults; see README)")
    s.add_argument("--lambda", dest="lambda", type=float, help="penalty strength (EWC, online EWC, SI, MAS)")
    s.add_argument("--gamma", type=float, help="online EWC: decay of earlier Fisher")
    s.add_argument("--xi", type=float, help="SI: damping")
    s.add_argument("--fisher", choices=("empirical", "true", "exact", "batched"), help="EWC: which Fisher")
    s.add_argument("--importance-samples", type=int,
                   help="EWC/MAS: sample budget for importance (default 1024; 0: the whole task)")
    s.add_argument("--importance-dtype", choices=("fp32", "bf16"), help="consolidation: precision storage")
    s.add_argument("--importance-keep", type=float,
                   help="consolidation: keep only this share of the largest importances (e.g. 0.01)")
    s.add_argument("--memory", type=int, help="replay: samples stored")
    s.add_argument("--selection", choices=("reservoir", "balanced", "herding"), help="replay: memory selection")
    s.add_argument("--replay-batch", type=int, help="replay: stored samples per step")
    s.add_argument("--alpha", type=float, help="DER/DER++: weight of the logit match")
    s.add_argument("--beta", type=float, help="DER++: weight of the memory's label loss")
    s.add_argument("--distill", type=float, help="LwF/iCaRL: weight of the distillation term")
    s.add_argument("--temperature", type=float, help="LwF/iCaRL: distillation temperature")
    s.add_argument("--bias-correction", choices=("none", "wa", "bic"), default="none",
                   help="replay methods: correct the output layer's bias toward new classes (WA or BiC)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning without forgetting.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_p = sub.add_parser("run", help="learn one task stream with one strategy",
                           description="Learn a task stream task by task and print the accuracy matrix.")
    run_p.add_argument("--strategy", default="naive", help=f"one of {', '.join(STRATEGIES)} (default: naive)")
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--out", help="write the result JSON here")
    run_p.add_argument("--checkpoint-dir", help="save the run's progress here after each task")
    run_p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (same options)")
    run_p.add_argument("--save", metavar="DIR", help="save the trained model in DIR (what `lifelong serve` serves)")
    run_p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                       help="any option of the strategy, e.g. reference_batch=128 (repeatable)")
    _add_common(run_p)
    _add_strategy_flags(run_p)
    cmp_p = sub.add_parser("compare", help="several strategies and seeds, a Markdown table",
                           description="Run each strategy with each seed; print mean ± std per strategy.")
    cmp_p.add_argument("--strategies", default="naive,ewc", help="comma-separated (default: %(default)s)")
    cmp_p.add_argument("--seeds", type=_ints, default=(0,), help="comma-separated (default: 0)")
    cmp_p.add_argument("--set", action="append", default=[], metavar="STRATEGY.OPTION=VALUE",
                       help="an option for one strategy, e.g. ewc.strength=300 (repeatable)")
    cmp_p.add_argument("--out", help="write all runs and the summary as JSON here")
    _add_common(cmp_p)
    _add_strategy_flags(cmp_p)
    rep_p = sub.add_parser("report", help="an HTML report with figures from result files",
                           description="Write DIR/index.html and its PNG figures from result JSON files.")
    rep_p.add_argument("results", nargs="+", metavar="RESULT.json",
                       help="files written by `run --out`, `compare --out` or a benchmark script")
    rep_p.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the figures")
    rep_p.add_argument("--title", help="the page title (default: the strategies' names)")
    from lifelong.service.cli import add_commands as add_service_commands

    add_service_commands(sub)  # serve, keys, worker
    from lifelong.data.cli import add_commands as add_data_commands

    add_data_commands(sub)  # data fetch, list, show
    return parser
