"""The README's control benchmark (behaviour cloning; `--settings rl-*` for DQN).

classic: CartPole-v1 -> Acrobot-v1 -> LunarLander-v3, task-IL, observations zero-padded to 8, one
input layer and one action head per task (the issue's default sequence; naive barely forgets it).
lander-rewired: LunarLander-v3 seen through a differently wired sensor board in each of 3 tasks,
task-IL with one input layer per task (chosen because naive clearly forgets it: the shared trunk is
retrained for each wiring). Scores: (return - random) / (expert - random) over 20 seeded episodes.

    python benchmarks/control.py --settings classic,lander-rewired
"""

import sys
from dataclasses import replace

from suite import Setting, run_settings

from lifelong.data.streams import StreamConfig
from lifelong.presets import PRESETS

STRATEGIES = "naive,replay,ewc,online-ewc,si,mas"
LANDER = Setting.from_preset(PRESETS["control/task/lander-rewired"])
SETTINGS = {
    "classic": Setting.from_preset(PRESETS["control/task/classic"], tuning="control-task-classic"),
    "lander-rewired": LANDER,
    "rl-cartpole-rewired": replace(LANDER, stream=StreamConfig("control", "task", environments="cartpole-rewired",
                                                               demos=0),
                                   tuning="control-task-cartpole-rewired-rl", mode="rl", rl_steps=30_000,
                                   options={"ewc": {"strength": 300.0}}),  # the default when the table ran
}

if __name__ == "__main__":
    if "--strategies" not in sys.argv:
        sys.argv += ["--strategies", STRATEGIES]
    sys.exit(run_settings(SETTINGS, "control", __doc__))
