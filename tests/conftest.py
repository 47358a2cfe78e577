"""Shared test set-up: the closed-form problems live in problems.py beside this file."""

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("WANDB_MODE", "disabled")
# The metrics' digits classifier is trained once per test session into a fresh cache, never into
# the user's ~/.cache (subprocesses inherit it).
os.environ.setdefault("SDE_GEN_CACHE", tempfile.mkdtemp(prefix="sde_gen_test_cache_"))

# The tests work on small tensors, where intra-op threads cost more than they give (and thrash
# when other processes share the cores).
torch.set_num_threads(1)
