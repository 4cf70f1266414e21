"""Scoring predictions against expert labels: metrics, case discovery, summaries."""
