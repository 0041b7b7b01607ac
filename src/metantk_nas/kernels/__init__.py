"""Training-free scores: empirical NTK (two backends), analytical MetaNTK, condition numbers, linear regions.

See docs/kernels.md for the formulas with the symbols used here.
"""
