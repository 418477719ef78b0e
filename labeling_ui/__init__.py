"""FiftyOne review of labels, with fixes flowing back into the next build (not built yet)."""
