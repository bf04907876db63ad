# RetinaNet + EfficientViT-M4 on your own Pascal VOC-format dataset. Copy this file next to itself
# (configs/detection/custom/, where its _base_ resolves) and set the three values below; everything else
# comes from ../retinanet_evit_m4.py. Expected layout:
#   data_root/Annotations/<id>.xml            (VOC XML: <size>, <object><name>, <bndbox>)
#   data_root/JPEGImages/<id>.jpg
#   data_root/ImageSets/Main/train.txt, val.txt   (one <id> per line)
# Evaluation: VOC mAP at IoU 0.5 (area under the precision-recall curve).
_base_ = '../retinanet_evit_m4.py'

data_root = 'data/my_dataset/'
classes = ('cat', 'dog')   # the <name> values of your XML files
image_size = (1000, 600)   # images are resized to fit in (long side, short side)

metainfo = dict(classes=classes)
model = dict(bbox_head=dict(num_classes=len(classes)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
voc = dict(type='VOCDataset', data_root=data_root, metainfo=metainfo,
           data_prefix=dict(sub_data_root=''))
train_dataloader = dict(dataset=dict(
    _delete_=True, **voc, ann_file='ImageSets/Main/train.txt',
    filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, **voc, ann_file='ImageSets/Main/val.txt', test_mode=True,
    pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='area')
test_evaluator = val_evaluator
