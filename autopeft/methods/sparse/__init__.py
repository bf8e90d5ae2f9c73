"""Sparse fine-tuning: methods that choose *which existing weights* a task may change."""
