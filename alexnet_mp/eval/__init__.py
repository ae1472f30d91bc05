"""Using a trained network: the ten-crop test (`tencrop`, `run`), loading a checkpoint for
inference (`inference`), and its figures (`figures` draws, `visualize` writes files)."""
