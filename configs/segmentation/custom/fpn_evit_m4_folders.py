# Semantic FPN + EfficientViT-M4 on your own images with PNG label maps. Copy this file and set the three
# values below; everything else (ImageNet-pretrained backbone, neck, optimizer, 40k-iteration schedule)
# comes from ../fpn_evit_m4_ade20k.py. Expected layout (a label map has its image's file name stem):
#   data_root/images/train/<name>.jpg, data_root/labels/train/<name>.png   (and .../val/)
# A label map holds one class index per pixel: value k is classes[k]; 255 is ignored.
_base_ = '../fpn_evit_m4_ade20k.py'

data_root = 'data/my_dataset/'
classes = ('background', 'road', 'car')
image_size = (512, 512)   # training crop (height, width); images are first resized around it

metainfo = dict(classes=classes)
model = dict(data_preprocessor=dict(size=image_size),
             decode_head=dict(num_classes=len(classes)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomResize', scale=(4 * image_size[1], image_size[0]), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4 * image_size[1], image_size[0]), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
folders = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(dataset=dict(
    _delete_=True, **folders, pipeline=train_pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(dataset=dict(
    _delete_=True, **folders, pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = val_dataloader
