"""mmdeploy rewrites of our exports: boxes clipped to the image, mmdet's pre-NMS selection.

**The image's own shape.** mmdet clips every decoded box to ``img_shape`` (the resized
image before padding) and then runs NMS. mmdeploy's detector rewrites set ``img_shape``
to the (padded) input's shape, so the exported graph clips to the padding instead, and
boxes at the right and bottom borders, and NMS among them, differ from mmdet's whenever
the resized image is not a multiple of 32. Our detector ``forward`` rewrites take the
shape from a second graph input, ``img_shape`` (int64 ``[H, W]``), which the backend
models feed from each image's metainfo; everything after it is mmdeploy's.

**Pre-NMS selection.** mmdet 3.x keeps, per level, the ``nms_pre`` best (anchor, class) pairs above
``score_thr`` (``filter_scores_and_topk``). mmdeploy 1.3.1 keeps the ``nms_pre`` best
*anchors* by their maximum class score, with every class of each. When a level has more
than ``nms_pre`` confident pairs, the exported model then keeps (anchor, class) pairs
that PyTorch drops, and its detections differ from PyTorch's (measured on a trained
RetinaNet: two of the top 100 detections replaced). This rewrite selects pairs like
mmdet; the NMS after it is mmdeploy's (standard ONNX ``NonMaxSuppression``).

:func:`rewrites_for` registers them in mmdeploy's rewriter registry only around one of
our exports (the pre-NMS one only when the model's dense head is one it serves: sigmoid
classifier, no score factors, ``nms_pre > 0``, mmdet's own ``predict_by_feat``) and
removes them afterwards, exception or not: other heads (FCOS, ATSS, SSD, ...) keep
mmdeploy's own rewrite, and every export outside ours all of mmdeploy's.
"""
import contextlib
from typing import Iterator, List

import torch
import torch.nn as nn

FUNC = 'mmdet.models.dense_heads.base_dense_head.BaseDenseHead.predict_by_feat'
SINGLE_STAGE = 'mmdet.models.detectors.single_stage.SingleStageDetector.forward'
TWO_STAGE = 'mmdet.models.detectors.two_stage.TwoStageDetector.forward'
SCORE_FACTOR_LAYERS = ('conv_centerness', 'atss_centerness')  # FCOS; ATSS, PAA


def _pairs_topk(scores: torch.Tensor, bbox_pred: torch.Tensor, priors: torch.Tensor,
                nms_pre: int):
    """The ``nms_pre`` best (anchor, class) pairs of one level: their boxes, priors and
    scores, the latter one-hot over the classes (zero elsewhere) for per-class NMS."""
    batch, anchors, classes = scores.shape
    values, pair = scores.reshape(batch, -1).topk(nms_pre)  # mmdeploy clamps k to the size
    anchor = torch.div(pair, classes, rounding_mode='floor')
    label = pair - anchor * classes
    index = anchor.unsqueeze(-1).expand(-1, -1, bbox_pred.shape[-1])
    bbox_pred = bbox_pred.gather(1, index)
    priors = priors.expand(batch, -1, -1).gather(1, anchor.unsqueeze(-1).expand(
        -1, -1, priors.shape[-1]))
    one_hot = torch.zeros(batch, values.shape[1], classes, dtype=values.dtype,
                          device=values.device)
    one_hot = one_hot.scatter(2, label.unsqueeze(-1), values.unsqueeze(-1))
    return one_hot, bbox_pred, priors


def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, batch_img_metas=None,
                    cfg=None, rescale=False, with_nms=True, **kwargs):
    """``BaseDenseHead.predict_by_feat`` for export, with mmdet's pair-wise pre-NMS top-k."""
    from mmdeploy.codebase.mmdet.deploy import get_post_processing_params
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.mmcv.ops import multiclass_nms
    from mmdeploy.utils import is_dynamic_shape
    from mmdet.structures.bbox import get_box_tensor
    ctx = FUNCTION_REWRITER.get_context()
    cfg = self.test_cfg
    nms_pre = cfg.get('nms_pre', -1)
    if score_factors is not None or not with_nms:  # serves() keeps such heads away from here
        raise ValueError(f'{type(self).__name__}: the pair-wise pre-NMS rewrite takes heads '
                         'without score factors, with NMS')
    dynamic = is_dynamic_shape(ctx.cfg)
    sizes = [score.shape[-2:] for score in cls_scores]
    mlvl_priors = self.prior_generator.grid_priors(sizes, dtype=bbox_preds[0].dtype,
                                                   device=bbox_preds[0].device)
    batch = cls_scores[0].shape[0]
    level_scores, level_boxes, level_priors = [], [], []
    for cls_score, bbox_pred, priors in zip(cls_scores, bbox_preds, mlvl_priors):
        priors = get_box_tensor(priors).unsqueeze(0)
        if not dynamic:
            priors = priors.data
        scores = cls_score.permute(0, 2, 3, 1).reshape(batch, -1, self.cls_out_channels)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(batch, -1,
                                                          self.bbox_coder.encode_size)
        scores, bbox_pred, priors = _pairs_topk(scores.sigmoid(), bbox_pred, priors, nms_pre)
        level_scores.append(scores)
        level_boxes.append(bbox_pred)
        level_priors.append(priors)
    boxes = get_box_tensor(self.bbox_coder.decode(
        torch.cat(level_priors, 1), torch.cat(level_boxes, 1),
        max_shape=batch_img_metas[0]['img_shape']))
    post = get_post_processing_params(ctx.cfg)
    return multiclass_nms(
        boxes, torch.cat(level_scores, 1), post.max_output_boxes_per_class,
        nms_type=cfg.nms.get('type'),
        iou_threshold=cfg.nms.get('iou_threshold', post.iou_threshold),
        score_threshold=cfg.get('score_thr', post.score_threshold),
        pre_top_k=post.pre_top_k, keep_top_k=cfg.get('max_per_img', post.keep_top_k))


def _set_img_shape(data_samples: list, img_shape: torch.Tensor) -> list:
    for sample in data_samples:
        sample.set_field(name='img_shape', value=img_shape, field_type='metainfo')
    return data_samples


def single_stage_forward(self, batch_inputs: torch.Tensor, data_samples: list,
                         mode: str = 'predict', *, img_shape: torch.Tensor, **kwargs):
    """``SingleStageDetector.forward`` for export, clipping to the ``img_shape`` input."""
    data_samples = _set_img_shape(data_samples, img_shape)
    return self.bbox_head.predict(self.extract_feat(batch_inputs), data_samples, rescale=False)


def two_stage_forward(self, batch_inputs: torch.Tensor, data_samples: list,
                      mode: str = 'predict', *, img_shape: torch.Tensor, **kwargs):
    """``TwoStageDetector.forward`` for export, clipping to the ``img_shape`` input."""
    data_samples = _set_img_shape(data_samples, img_shape)
    features = self.extract_feat(batch_inputs)
    proposals = self.rpn_head.predict(features, data_samples, rescale=False)
    return self.roi_head.predict(features, proposals, data_samples, rescale=False)


class ImageShapeInput(nn.Module):
    """What our detection exports trace: ``(input, img_shape)`` -> the detector's outputs."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor, img_shape: torch.Tensor):
        return self.detector(inputs, self.data_samples, mode='predict', img_shape=img_shape)


def serves(model: nn.Module) -> bool:
    """Whether the model's dense head is one :func:`predict_by_feat` reproduces exactly."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    head = getattr(model, 'bbox_head', None)
    if not isinstance(head, BaseDenseHead):
        return False
    return (type(head).predict_by_feat is BaseDenseHead.predict_by_feat
            and getattr(head, 'use_sigmoid_cls', False)
            and (head.test_cfg or {}).get('nms_pre', -1) > 0
            and not any(hasattr(head, name) for name in SCORE_FACTOR_LAYERS))


def _rewrites(model: nn.Module) -> List[tuple]:
    from mmdet.models.detectors import SingleStageDetector, TwoStageDetector
    found = []
    if isinstance(model, SingleStageDetector):
        found.append((SINGLE_STAGE, single_stage_forward))
    elif isinstance(model, TwoStageDetector):
        found.append((TWO_STAGE, two_stage_forward))
    if serves(model):
        found.append((FUNC, predict_by_feat))
    return found


@contextlib.contextmanager
def rewrites_for(model: nn.Module, backend: str) -> Iterator[List[str]]:
    """Inside the block: our rewrites for ``model`` registered in mmdeploy for ``backend``
    (they win over mmdeploy's default ones). mmdeploy's registry is as before afterwards,
    exception or not. Yields the rewritten functions."""
    rewrites = _rewrites(model)
    if not rewrites:
        yield []
        return
    from mmdeploy.core import FUNCTION_REWRITER
    records = FUNCTION_REWRITER._registry._rewrite_records
    before = {name: list(records[name]) if name in records else None for name, _ in rewrites}
    for name, function in rewrites:
        FUNCTION_REWRITER.register_rewriter(name, backend=backend)(function)
    try:
        yield [name for name, _ in rewrites]
    finally:
        for name, saved in before.items():
            if saved is None:
                records.pop(name, None)
            else:
                records[name] = saved
