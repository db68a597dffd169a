"""Figures, all drawn in one style (kiln.viz.style)."""
