"""Retention: the policy file, the published notice generated from it, and its sweeps."""
