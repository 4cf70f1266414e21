"""Segmenting a CT: intensity window, network, model file, sliding window, clean-up, the flow."""
