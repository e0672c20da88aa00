"""lifelong's strategies inside other trainers: Hugging Face `Trainer` and PyTorch Lightning.

Each integration is a callback that makes the same calls a user's own loop makes (see
examples/own_training_loop.py): before a task, after each backward pass, after each optimizer step,
after the task. Neither framework is imported by the rest of lifelong.
"""
