"""RFS supervised pre-training of the evaluation network and few-shot evaluation (logistic regression)."""
