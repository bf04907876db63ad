"""mmdet's pre-NMS selection for dense heads, as an mmdeploy rewrite (ONNX Runtime, OpenVINO).

mmdet 3.x keeps, per level, the ``nms_pre`` best (anchor, class) pairs above
``score_thr`` (``filter_scores_and_topk``). mmdeploy 1.3.1 keeps the ``nms_pre`` best
*anchors* by their maximum class score, with every class of each. When a level has more
than ``nms_pre`` confident pairs, the exported model then keeps (anchor, class) pairs
that PyTorch drops, and its detections differ from PyTorch's (measured on a trained
RetinaNet: two of the top 100 detections replaced). This rewrite selects pairs like
mmdet; the NMS after it is mmdeploy's (standard ONNX ``NonMaxSuppression``).

:func:`rewrite_for` registers it in mmdeploy's rewriter registry only around one of
our exports, only when the model's dense head is one it serves (sigmoid classifier,
no score factors, ``nms_pre > 0``, mmdet's own ``predict_by_feat``), and removes it
afterwards, exception or not: other heads (FCOS, ATSS, SSD, ...) and every export
outside ours keep mmdeploy's own rewrite.
"""
import contextlib
from typing import Iterator

import torch
import torch.nn as nn

FUNC = 'mmdet.models.dense_heads.base_dense_head.BaseDenseHead.predict_by_feat'
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


@contextlib.contextmanager
def rewrite_for(model: nn.Module, backend: str) -> Iterator[bool]:
    """Inside the block, and only if :func:`serves` the model: :func:`predict_by_feat` is
    mmdeploy's rewrite of ``BaseDenseHead.predict_by_feat`` for ``backend``. mmdeploy's
    registry is as before afterwards, exception or not. Yields whether it is registered."""
    if not serves(model):
        yield False
        return
    from mmdeploy.core import FUNCTION_REWRITER
    records = FUNCTION_REWRITER._registry._rewrite_records
    before = list(records[FUNC]) if FUNC in records else None
    FUNCTION_REWRITER.register_rewriter(FUNC, backend=backend)(predict_by_feat)
    try:
        yield True
    finally:
        if before is None:
            records.pop(FUNC, None)
        else:
            records[FUNC] = before
