"""Synthetic abdominal CT with exact truth: the phantom behind the demo, the tests and training."""

from lvt.phantom.core import LesionTruth, Phantom, PhantomConfig, insert_synthetic_tumors, make_phantom

__all__ = ["LesionTruth", "Phantom", "PhantomConfig", "insert_synthetic_tumors", "make_phantom"]
