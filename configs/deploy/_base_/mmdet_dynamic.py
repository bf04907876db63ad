# Object detection at any input size and batch: the number of detections varies too. img_shape
# ([N, 2]: each image's resized height and width) is the graph's second input (evit_mm's rewrites).
_base_ = ['./mmdet.py']
onnx_config = dict(
    dynamic_axes=dict(
        input=dict({0: 'batch', 2: 'height', 3: 'width'}),
        img_shape=dict({0: 'batch'}),
        dets=dict({0: 'batch', 1: 'num_dets'}),
        labels=dict({0: 'batch', 1: 'num_dets'})))
