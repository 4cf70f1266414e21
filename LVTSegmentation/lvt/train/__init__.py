"""Training the paper's method: config, data, sampling, augmentation, losses, the loop."""
