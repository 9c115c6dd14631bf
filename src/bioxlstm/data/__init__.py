"""Data sources: batch sources for training and iterators for evaluation."""
