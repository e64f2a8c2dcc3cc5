"""Separator backbone: Open-Unmix presets, random-mix sampling honouring selections, training, evaluation."""
