# Instance segmentation (Mask R-CNN), end to end: boxes, labels and 28x28 per-box masks,
# pasted into the image by mmdeploy's end-to-end model.
_base_ = ['./mmdet.py']
onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
