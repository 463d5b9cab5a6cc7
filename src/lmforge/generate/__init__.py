"""The generate capability."""
