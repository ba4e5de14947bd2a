"""The training loop and its records: the `Experiment` that builds a run's parts, the `Trainer` that runs
them (steps, EMA, optimizer groups, schedules, best/patience, save and resume), callbacks and trackers."""
