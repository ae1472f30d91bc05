"""The paper's claims as experiments: `variants` (what each takes away, the shared budget),
`runs` (training and evaluating each, on disk), `table` (the summary), `estimate` (--dry-run)."""
