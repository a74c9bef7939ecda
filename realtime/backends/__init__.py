"""Backends over exported models: each module imports its heavy dependency itself.

``onnxruntime`` (:mod:`.onnxruntime`) runs a bundle's ONNX artifacts; ``tensorrt``
(:mod:`.tensorrt`) runs TensorRT engines built from them. Both keep the frame's
scheduler, noise and class scores in torch/numpy exactly as the torch backend does
(:class:`~neuroimagen.training.models.img2img.Img2ImgFrame`), so only the networks differ.
"""
