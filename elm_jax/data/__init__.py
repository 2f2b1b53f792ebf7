"""Data: generators and loaders, one module per task."""
