"""Training side of facewatch: PyTorch networks, data prep, training, validation, export.

Needs the `train` extra (torch, onnx). May import engines; never daemon.
"""
