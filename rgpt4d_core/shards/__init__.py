"""Versioned Parquet shards of precomputed expert targets: schema (the contract), codec, manifest, reader."""
