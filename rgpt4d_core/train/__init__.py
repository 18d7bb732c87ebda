"""Framework-free training pieces: optimiser/schedule, one optimisation step, training-state checkpoints."""
