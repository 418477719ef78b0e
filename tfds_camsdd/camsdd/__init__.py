"""camsdd dataset."""
