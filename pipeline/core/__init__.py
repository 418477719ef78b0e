"""Pure functions: bytes and numpy in, numbers out. No Beam, no TensorFlow."""
