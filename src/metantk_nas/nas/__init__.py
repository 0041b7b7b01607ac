"""The search space: candidate operations, the masked supernet, the evaluation network and genotypes."""
