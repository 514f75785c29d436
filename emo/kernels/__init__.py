"""Fused kernels for the fast GPU path, each with a plain-torch fallback, chosen through `registry`."""
