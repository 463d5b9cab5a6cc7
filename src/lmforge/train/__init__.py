"""The train capability."""
