"""Benchmarks and their evidence: the bench of every mode, figures and tables drawn from recorded runs."""
