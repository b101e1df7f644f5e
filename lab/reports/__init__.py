"""The results table rendered: terminal, markdown, CSV, HTML."""
