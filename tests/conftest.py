"""Shared test set-up: the closed-form problems live in problems.py beside this file."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("WANDB_MODE", "disabled")

# The tests work on small tensors, where intra-op threads cost more than they give (and thrash
# when other processes share the cores).
torch.set_num_threads(1)
