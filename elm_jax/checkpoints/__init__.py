"""Checkpoints: the published PyTorch format (read without torch) and elm_jax model directories."""
