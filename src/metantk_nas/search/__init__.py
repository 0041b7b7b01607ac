"""TE-NAS-style pruning search with the MetaNTK, NTK, linear-region and random variants."""
