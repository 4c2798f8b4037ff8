"""Utilities: configuration, experiment folders, logging."""
