"""The synthetic 4D world: seeded scenes, exact rendering, R4D-Bench-style questions and the dataset writer."""
