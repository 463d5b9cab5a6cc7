"""The serve capability."""
