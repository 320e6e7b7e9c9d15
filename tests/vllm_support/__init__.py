"""Test support for the vLLM backend: start a real vLLM on a CPU-only machine. Never shipped (see README.md)."""
