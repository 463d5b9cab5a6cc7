"""The evaluate capability."""
