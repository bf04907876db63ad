# Semantic segmentation, end to end. The graph returns the logits at the input size
# (with_argmax=False); evit_mm's backend model then applies mmseg's own post-processing
# (bilinear resize to the image's size, then argmax), so label maps match PyTorch's.
# mmdeploy's with_argmax=True would take the argmax first and resize the label map with
# nearest neighbour, which moves class boundaries.
# The bf16 and int8 configs set codebase_config.argmax_before_upsampling=True: the graph
# returns the argmax of the decode head's logits at the head's resolution (1/4 of the input for
# Semantic FPN), upsampled by nearest neighbour afterwards. That skips the bilinear resize and
# the argmax of every class's logits at full resolution (most of the post-processing) and moves
# class boundaries by up to half a head pixel; their metric check decides. Float32 configs refuse it.
_base_ = ['./onnx_config.py']
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
