"""One cell, both sides of the process boundary: launch (the parent), main (the child), its
spec, and what the child measures."""
