"""The ground floor: what every layer above may use and that imports none of them — the one place that knows
the process rank (`dist`), and checkpoint files, atomic writes and seeding (`state`)."""
