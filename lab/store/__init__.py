"""Stored runs: folders, atomic writes, the fingerprint, the one reader."""
