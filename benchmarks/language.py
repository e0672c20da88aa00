"""The README's language benchmark: CLINC150, 10 domains of 15 intents, all-MiniLM-L6-v2.

frozen-*: the encoder is frozen; its sentence embeddings (cached on disk) feed an MLP 384-256-256
with one head over 150 intents (masked per domain in task-IL); replay stores 150 queries (1 %).
finetune-*: the encoder itself trains with a linear head (consolidation protects all 22.6M
parameters). So that every strategy and seed fits on 2 CPU cores, the fine-tuned tables use the
first 5 domains with 30 training queries per intent (all test queries), 3-8 minutes a run on one
core; replay stores 25 queries (1 % of that). Hyperparameters: results/tuning/ (CLINC150's
validation split); class-IL reuses task-IL's.

    python benchmarks/language.py --settings frozen-task,frozen-class
    python benchmarks/language.py --settings finetune-task
    python benchmarks/language.py --settings finetune-class --seeds 0
    python benchmarks/language.py --settings lora-task --strategies naive,ewc,olora
"""

import sys

from suite import Setting, run_settings

from lifelong.presets import PRESETS

SETTINGS = {
    "frozen-task": Setting.from_preset(PRESETS["clinc150/task/frozen"]),
    "frozen-class": Setting.from_preset(PRESETS["clinc150/class/frozen"]),
    "finetune-task": Setting.from_preset(PRESETS["clinc150/task/finetune"]),
    # LoRA rank 8 (query, value) for every method: naive is sequential LoRA; olora a new adapter per task
    "lora-task": Setting.from_preset(PRESETS["clinc150/task/lora"]),
    # the same with olora in O-LoRA's own mode (its loss), beside the mode chosen on validation ("inputs")
    "lora-task-olora-loss": Setting.from_preset(PRESETS["clinc150/task/lora"], options={"olora": {"mode": "loss"}}),
    # class-IL reuses the task-IL strengths (not tuned again: each fine-tuned run costs minutes)
    "finetune-class": Setting.from_preset(PRESETS["clinc150/class/finetune"]),
}

if __name__ == "__main__":
    sys.exit(run_settings(SETTINGS, "language", __doc__))
