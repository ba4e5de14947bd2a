"""Features that combine with any experiment: distillation from a teacher and multi-task detection +
segmentation, each an `Experiment` subclass whose objective wraps or extends the one below it."""
