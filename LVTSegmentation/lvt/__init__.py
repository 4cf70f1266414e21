"""LVT core: liver, intrahepatic vessel and liver tumor segmentation of contrast-enhanced CT.

Slicer-free by design: the CLI, the Slicer module and the training module are thin doors into it.
"""

__version__ = "0.1.0"
