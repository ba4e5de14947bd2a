"""The foundation every layer uses: errors, the configuration and its hyperparameters, shared constants,
file and run-folder helpers, logging, seeding, threads and memory figures. Imports nothing above it."""
