"""Benchmark scoring: the R4D-Bench task taxonomy (``tasks``) and the 12-column accuracy table (``metrics``)."""
