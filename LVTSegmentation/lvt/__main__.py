"""``python -m lvt`` (how the Slicer module runs the core with PythonSlicer)."""

from lvt.cli import main

main()
