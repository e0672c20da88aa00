"""The README's vision benchmark: every strategy, 3 seeds, on Permuted Fashion-MNIST (10 tasks,
domain-IL) and Split Fashion-MNIST (5 x 2 classes, task-IL and class-IL), MLP 784-400-400-10.

One training regime for every strategy, chosen on the validation split (see README): Adam 1e-3
fresh per task, batch 128, 2 epochs per task, dropout 0.3. Replay stores 600 samples (1 %).

    python benchmarks/vision.py                      # everything (make bench-vision)
    python benchmarks/vision.py --settings permuted --seeds 0 --strategies naive,ewc
    python benchmarks/vision.py --settings permuted-50 --seeds 0 \
        --strategies naive,gpm,online-kfac-ewc,online-ewc,ewc
"""

import sys
from dataclasses import replace

from suite import Setting, run_settings

from lifelong.data.streams import StreamConfig
from lifelong.presets import PRESETS

PERMUTED = Setting.from_preset(PRESETS["permuted-fmnist"])
SETTINGS = {
    "permuted": PERMUTED,
    "split-task": Setting.from_preset(PRESETS["split-fmnist/task"]),
    # the vision regime on class-IL (the class-incremental table, benchmarks/class_il.py, has its own)
    "split-class": replace(PERMUTED, stream=StreamConfig("split-fmnist", "class", 5), tuning="split-fmnist-class"),
    # 50 tasks (issue 18): the same network, one epoch per task so that a run fits a CPU (a specialist
    # still reaches about 0.85), each strategy with its options tuned on the 10-task setting
    "permuted-50": replace(PERMUTED, stream=StreamConfig("permuted-fmnist", "domain", 50),
                           learner=replace(PERMUTED.learner, epochs=1)),
}

if __name__ == "__main__":
    sys.exit(run_settings(SETTINGS, "vision", __doc__))
