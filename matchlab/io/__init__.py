"""Readers of small user-supplied text files (numpy only; no torch)."""
