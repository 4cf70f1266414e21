"""``python -m lvt`` (how the Slicer module runs the core with PythonSlicer)."""

from lvt.cli.main import main

main()
