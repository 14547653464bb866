"""Retraining a searched genotype into a classifier (the paper's Sec. 4.3, 4.4 and 4.6 recipes) on timm's parts."""
