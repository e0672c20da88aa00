"""Language models that keep learning: a GPT, its learner and the `text-domains` and `facts` runs."""

from lifelong.lm.learner import LMLearner, next_token_loss

__all__ = ["LMLearner", "next_token_loss"]
