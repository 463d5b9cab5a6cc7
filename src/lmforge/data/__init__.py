"""The data layer: dataset kinds, loading, validation, split, templates, tokenization, packing."""
