"""Datasets, batching and the built-in tasks."""
