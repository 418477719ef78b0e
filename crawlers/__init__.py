"""Crawlers: one module per image source, behind one small interface (not built yet)."""
