# Semantic FPN + EfficientViT-M4 on your own images with PNG label maps. Copy this file next to itself
# (configs/segmentation/custom/) and set the four values below; everything else (ImageNet-pretrained
# backbone, neck, optimizer, 40k-iteration schedule) comes from ../fpn_evit_m4_ade20k.py. Expected layout
# (a label map has its image's file name stem):
#   data_root/images/train/<name>.jpg, data_root/labels/train/<name>.png   (and .../val/)
# A label map holds one class index per pixel: value k is classes[k]; ignore_index marks void pixels.
_base_ = '../fpn_evit_m4_ade20k.py'

data_root = 'data/my_dataset/'
classes = ('background', 'road', 'car')
ignore_index = 255        # the label value of void pixels (not a class): ignored by the loss and the mIoU
image_size = (512, 512)   # training crop (height, width); images are first resized around it

# ignore_index feeds the dataset, the head's loss, the label padding and the metric: they must agree.
metainfo = dict(classes=classes)
model = dict(data_preprocessor=dict(size=image_size, seg_pad_val=ignore_index),
             decode_head=dict(num_classes=len(classes), ignore_index=ignore_index))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(4 * image_size[1], image_size[0]), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, cat_max_ratio=0.75, ignore_index=ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4 * image_size[1], image_size[0]), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
folders = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
               ignore_index=ignore_index)
train_dataloader = dict(dataset=dict(
    _delete_=True, **folders, pipeline=train_pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(dataset=dict(
    _delete_=True, **folders, pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = val_dataloader
val_evaluator = dict(ignore_index=ignore_index)
test_evaluator = val_evaluator
