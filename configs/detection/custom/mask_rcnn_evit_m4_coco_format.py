# Mask R-CNN + EfficientViT-M4 on your own COCO-format dataset (boxes and polygon or RLE masks). Copy
# this file next to itself (configs/detection/custom/, where its _base_ resolves) and set the three
# values below; everything else comes from ../mask_rcnn_evit_m4.py.
# Expected layout:
#   data_root/annotations/train.json, data_root/annotations/val.json  (COCO instances format)
#   data_root/train/<images>, data_root/val/<images>                    ("file_name" in the JSON)
_base_ = '../mask_rcnn_evit_m4.py'

data_root = 'data/my_dataset/'
classes = ('cat', 'dog')   # the category names of your JSON, in the order of the model's outputs
image_size = (1333, 800)   # images are resized to fit in (long side, short side)

metainfo = dict(classes=classes)
model = dict(roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                           mask_head=dict(num_classes=len(classes))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
    data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
    data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
