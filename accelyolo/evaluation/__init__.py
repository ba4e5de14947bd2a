"""Measuring a model: the detection and segmentation metrics, the evaluators that run a model over a
validation loader (in training and in `accelyolo val`), and the tables and plots they write."""
