# Instance segmentation at any input size and batch: mmdet_dynamic.py's axes, and the masks output of
# mmdet_instance_seg.py.
_base_ = ['./mmdet_dynamic.py']
onnx_config = dict(output_names=['dets', 'labels', 'masks'],
                   dynamic_axes=dict(masks=dict({0: 'batch', 1: 'num_dets'})))
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
