"""The README's class-incremental table: Split Fashion-MNIST, 5 tasks of 2 classes, one 10-way head,
MLP 784-400-400-10, Adam 1e-3 fresh per task, batch 128 new + 128 from memory, logits of classes
not yet seen masked in the loss and at evaluation; accuracy over the classes seen so far.

split-fmnist-random: random class orders drawn from each seed (the main table); split-fmnist-fixed:
classes in order 0-1, 2-3, ... (to compare with the peers' published rows); memory 600 (1 %);
1 epoch. split-fmnist-200 / -2000 and -5ep vary the budget and the epochs; split-digits is the fast
case. CLINC150 class-IL (150 intents in 10 domain groups, frozen MiniLM encoder, memory 150 = 1 %) is
benchmarks/language.py's frozen-class setting.

    python benchmarks/class_il.py --settings split-fmnist-random
"""

import sys
from dataclasses import replace

from suite import Setting, run_settings

from lifelong.data.streams import StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.run import ModelConfig

STRATEGIES = ("naive,ewc,lwf,joint,replay,agem,der,der++,der-ace,er-ace,icarl,replay+wa,replay+bic,der++ +bic"
              .replace(" ", ""))
ONE_EPOCH = LearnerConfig(epochs=1, batch_size=128, lr=1e-3)
MLP = ModelConfig("mlp", (400, 400), 0.0)
FMNIST = StreamConfig("split-fmnist", "class", 5, class_order="random")
SETTINGS = {
    "split-fmnist-random": Setting(FMNIST, ONE_EPOCH, MLP, 600, tuning="split-fmnist-class-il"),
    "split-fmnist-fixed": Setting(replace(FMNIST, class_order="fixed"), ONE_EPOCH, MLP, 600,
                                  tuning="split-fmnist-class-il"),
    "split-fmnist-200": Setting(FMNIST, ONE_EPOCH, MLP, 200, tuning="split-fmnist-class-il"),
    "split-fmnist-2000": Setting(FMNIST, ONE_EPOCH, MLP, 2000, tuning="split-fmnist-class-il"),
    "split-fmnist-5ep": Setting(FMNIST, replace(ONE_EPOCH, epochs=5), MLP, 600, tuning="split-fmnist-class-il"),
    "split-digits": Setting(StreamConfig("split-digits", "class", 5, class_order="random"),
                            LearnerConfig(epochs=10, batch_size=32), ModelConfig("mlp", (100, 100)), 100),
}

if __name__ == "__main__":
    if "--strategies" not in sys.argv:
        sys.argv += ["--strategies", STRATEGIES]
    sys.exit(run_settings(SETTINGS, "class-il", __doc__))
