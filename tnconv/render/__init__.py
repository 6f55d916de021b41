"""Renderings of networks: deterministic text and diagrams."""
