# Semantic segmentation at any input size and batch: whole images at the test pipeline's scale, as
# mmseg's tools/test.py runs them (images of one batch share a size, as mmseg's preprocessor requires).
_base_ = ['./mmseg.py']
onnx_config = dict(
    dynamic_axes=dict(
        input=dict({0: 'batch', 2: 'height', 3: 'width'}),
        output=dict({0: 'batch', 2: 'height', 3: 'width'})))
