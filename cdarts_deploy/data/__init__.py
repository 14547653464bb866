"""Dataset readers shared by the search and the retraining (floor 1: numpy, no training code)."""
