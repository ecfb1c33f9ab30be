"""Per-prompt router (placeholder, filled below)."""
