"""Converters from released checkpoints to vqjax runs (taming.py, llamagen.py, ...)."""
