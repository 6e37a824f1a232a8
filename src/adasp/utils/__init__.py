"""Small shared utilities: atomic file writing and table formatting."""
