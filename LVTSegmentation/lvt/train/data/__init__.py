"""Training data: dataset specs, discovery, loading, the preprocessed cache."""
