"""The HTTP edge, one module per audience."""
