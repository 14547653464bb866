"""Data plumbing shared by the search and the retraining (floor 1: numpy and torch, no training code):
dataset readers (``cifar``), in-memory image arrays and the shuffled per-process loader (``images``), and the
torchrun process group (``distributed``)."""
