"""A run: the selection, the one run loop, the executors, the run writer, the machine's load."""
