"""Benchmarks of helix_dask against its peers (see RESULTS.md)."""
