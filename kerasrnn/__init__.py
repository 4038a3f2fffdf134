"""kerasrnn: train a small recurrent text classifier in Keras and ship it (SavedModel, ONNX, TFLite)."""

__version__ = "0.1.0"
