"""Evaluation metrics, reports and the split-leak check."""
