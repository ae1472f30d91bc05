"""Speed, as ratios measured side by side in one run: `timing` (the one timer, batch and step
functions), `sections` (network, placements, ten crops, input pipeline, LRN), `scaling` (ranks)."""
