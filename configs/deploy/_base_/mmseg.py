# Semantic segmentation, end to end. The graph returns the logits at the input size
# (with_argmax=False); evit_mm's backend model then applies mmseg's own post-processing
# (bilinear resize to the image's size, then argmax), so label maps match PyTorch's.
# mmdeploy's with_argmax=True would take the argmax first and resize the label map with
# nearest neighbour, which moves class boundaries.
_base_ = ['./onnx_config.py']
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
