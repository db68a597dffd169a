"""Hyperparameter search: `kiln tune` on Optuna (embedded, SQLite) or Ray Tune (a cluster)."""
