"""Export of a bundle: SavedModel (TF Serving), TFLite, ONNX, each verified against Keras before it is
written."""
