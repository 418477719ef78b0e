"""TensorFlow: the teacher, the students, TFLite; train, quantize, evaluate, ablate."""
