"""Datasets: raw RFS readers, the embedded synthetic generator, the prepared (memory-mapped) format, episodes and
batched tensor transforms."""
