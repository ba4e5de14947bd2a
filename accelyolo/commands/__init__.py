"""What users call: `fit`, the `accelyolo` console script and its subcommands (train, val, predict,
export, evolve, ...), and launching on several processes. The top-level `train.py`, `validation.py` and
`evolve.py` are these commands' script forms for `accelerate launch`."""
