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

from lifelong.presets import PRESETS

STRATEGIES = ("naive,ewc,lwf,joint,replay,agem,der,der++,der-ace,er-ace,icarl,replay+wa,replay+bic,der++ +bic"
              .replace(" ", ""))
FIXED = Setting.from_preset(PRESETS["split-fmnist/class"])
RANDOM = replace(FIXED, stream=replace(FIXED.stream, class_order="random"))
DIGITS = Setting.from_preset(PRESETS["split-digits/class"])
SETTINGS = {
    "split-fmnist-random": RANDOM,
    "split-fmnist-fixed": FIXED,
    "split-fmnist-200": replace(RANDOM, memory=200),
    "split-fmnist-2000": replace(RANDOM, memory=2000),
    "split-fmnist-5ep": replace(RANDOM, learner=replace(RANDOM.learner, epochs=5)),
    # EWC at 300, the library default when the table ran (untuned here)
    "split-digits": replace(DIGITS, stream=replace(DIGITS.stream, class_order="random"),
                            options={"ewc": {"strength": 300.0}}),
}

if __name__ == "__main__":
    if "--strategies" not in sys.argv:
        sys.argv += ["--strategies", STRATEGIES]
    sys.exit(run_settings(SETTINGS, "class-il", __doc__))
