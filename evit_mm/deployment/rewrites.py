"""mmdeploy rewrites of our exports: mmdet's post-processing, per image of a batch, and
mmseg's upsampling at any input size.

**Each image's own shape.** mmdet clips every decoded box to ``img_shape`` (the resized
image before padding) and then runs NMS. mmdeploy's detector rewrites set ``img_shape``
to the (padded) input's shape, so the exported graph clips to the padding instead, and
boxes at the right and bottom borders, and NMS among them, differ from mmdet's whenever
the resized image is not a multiple of 32. Our detector ``forward`` rewrites take the
shapes from a second graph input, ``img_shape`` (int64 ``[N, 2]``: ``[H, W]`` per image),
which the backend models feed from each image's metainfo (:func:`.backends.graph_feed`).

**Dense heads (RetinaNet).** mmdet 3.x keeps, per level, the ``nms_pre`` best (anchor,
class) pairs above ``score_thr`` (``filter_scores_and_topk``). mmdeploy 1.3.1 keeps the
``nms_pre`` best *anchors* by their maximum class score, with every class of each; where a
level has more than ``nms_pre`` confident pairs, its detections differ (measured on a
trained RetinaNet: two of the top 100 replaced). :func:`predict_by_feat` selects pairs
like mmdet.

**Mask R-CNN.** mmdeploy's RPN rewrite runs one NMS over all levels and takes the deploy
config's ``score_threshold`` as a proposal floor; mmdet suppresses per level
(``batched_nms`` with the level ids), with no floor, after dropping boxes no larger than
``min_bbox_size``. mmdeploy's RoI-head rewrite keeps, per RoI, only the box regressed for
its top-scoring class and gives it to every class; mmdet decodes a box per class and runs
its multiclass NMS over every (RoI, class) pair above ``score_thr``.
:func:`rpn_predict_by_feat` and :func:`roi_predict_bbox` compute what mmdet computes. For
OpenVINO, mmdeploy exports the RoI feature extractor as OpenVINO's own
``ExperimentalDetectronROIFeatureExtractor`` (its own level assignment, image 0 only); we
keep mmdeploy's default export (ONNX ``RoiAlign``, mmdet's levels), which OpenVINO compiles.

**Semantic FPN at any size.** mmseg's ``Upsample`` (the FPN head's scale heads) computes its
output size with ``int()``, which tracing freezes at the export size: a dynamic graph then
upsamples every other size to the export's, and its logits are off by up to ~3e-2 (86% of
the labels right on a portrait image). :func:`seg_upsample_forward` computes the size in the
graph.

NMS is the standard ONNX ``NonMaxSuppression`` (mmdeploy's ``multiclass_nms``), run per
class, or per level for the RPN: each (box, class) pair is a box whose score is zero for
every other class (ONNX keeps only scores above the threshold, strictly).

:func:`rewrites_for` registers them in mmdeploy's rewriter registry only around one of
our exports, each only where the model's head is one it reproduces (:func:`serves`,
:func:`serves_two_stage`), and removes them afterwards, exception or not: other heads
(FCOS, ATSS, SSD, Cascade R-CNN, ...) keep mmdeploy's own rewrites, and every export
outside ours all of mmdeploy's.
"""
import contextlib
import math
from typing import Iterator, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DeployError

FUNC = 'mmdet.models.dense_heads.base_dense_head.BaseDenseHead.predict_by_feat'
RPN = 'mmdet.models.dense_heads.rpn_head.RPNHead.predict_by_feat'
ROI_BBOX = 'mmdet.models.roi_heads.standard_roi_head.StandardRoIHead.predict_bbox'
ROI_EXTRACTOR = ('mmdet.models.roi_heads.roi_extractors.single_level_roi_extractor.'
                 'SingleRoIExtractor.forward')
SINGLE_STAGE = 'mmdet.models.detectors.single_stage.SingleStageDetector.forward'
TWO_STAGE = 'mmdet.models.detectors.two_stage.TwoStageDetector.forward'
SEG_UPSAMPLE = 'mmseg.models.utils.wrappers.Upsample.forward'
REWRITTEN = (FUNC, RPN, ROI_BBOX, ROI_EXTRACTOR, SINGLE_STAGE, TWO_STAGE,
             SEG_UPSAMPLE)  # ours, by name
SCORE_FACTOR_LAYERS = ('conv_centerness', 'atss_centerness')  # FCOS; ATSS, PAA
IMG_SHAPES = 'batch_img_shape'  # metainfo key: the [N, 2] graph input, on every sample


def image_shapes(batch_img_metas: list) -> torch.Tensor:
    """The ``[N, 2]`` (H, W) graph input, as :func:`_set_img_shape` stored it."""
    return batch_img_metas[0][IMG_SHAPES]


def clip_to_images(boxes: torch.Tensor, img_shapes: torch.Tensor) -> torch.Tensor:
    """xyxy ``boxes`` (``[N, ..., 4]``) clamped to ``[0, W] x [0, H]`` of their image, as
    mmdet's box coders clip to ``max_shape``."""
    max_xy = img_shapes.flip(-1).repeat(1, 2).to(boxes.dtype)  # [N, 4]: W, H, W, H
    max_xy = max_xy.view(max_xy.shape[0], *[1] * (boxes.dim() - 2), 4)
    return torch.max(torch.min(boxes, max_xy), boxes.new_zeros(()))


def drop_small(boxes: torch.Tensor, scores: torch.Tensor, min_size: float) -> torch.Tensor:
    """``scores`` (``[N, K]`` or ``[N, K, C]``) zeroed where the box is not wider and taller
    than ``min_size`` (mmdet's ``min_bbox_size`` filter; no filter below 0)."""
    if min_size < 0:
        return scores
    wh = boxes[..., 2:] - boxes[..., :2]
    valid = ((wh[..., 0] > min_size) & (wh[..., 1] > min_size)).to(scores.dtype)
    return scores * (valid if scores.dim() == valid.dim() else valid.unsqueeze(-1))


def _decode(coder, priors: torch.Tensor, deltas: torch.Tensor,
            img_shapes: torch.Tensor) -> torch.Tensor:
    """mmdet's decoding, clipped to each image (when the coder clips)."""
    from mmdet.structures.bbox import get_box_tensor
    boxes = get_box_tensor(coder.decode(priors, deltas, max_shape=None))
    return clip_to_images(boxes, img_shapes) if getattr(coder, 'clip_border', False) else boxes


def _one_hot(scores: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """``[N, K]`` scores spread to ``[N, K, count]``: each in its group's column, zero
    elsewhere, so that ONNX's per-class NMS suppresses within each group only."""
    spread = torch.zeros(*scores.shape, count, dtype=scores.dtype, device=scores.device)
    return spread.scatter(2, groups.unsqueeze(-1), scores.unsqueeze(-1))


def _nms(boxes: torch.Tensor, scores: torch.Tensor, cfg, score_thr: float, max_per_img: int):
    """mmdeploy's ``multiclass_nms`` (ONNX ``NonMaxSuppression`` per class), with no pre-NMS
    cut of its own: ``(dets [N, k, 5], labels [N, k])``, best first."""
    from mmdeploy.mmcv.ops import multiclass_nms
    return multiclass_nms(boxes, scores, max_per_img, nms_type=cfg.nms.get('type', 'nms'),
                          iou_threshold=cfg.nms.iou_threshold, score_threshold=score_thr,
                          pre_top_k=-1, keep_top_k=max_per_img)


def _topk_pairs(scores: torch.Tensor, k: int):
    """The ``k`` best (row, class) pairs of ``[N, K, C]`` scores: values, rows, classes."""
    classes = scores.shape[-1]
    values, pair = scores.reshape(scores.shape[0], -1).topk(k)  # mmdeploy clamps k to the size
    row = torch.div(pair, classes, rounding_mode='floor')
    return values, row, pair - row * classes


def _gather_rows(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``tensor[n, rows[n, j]]`` for every image ``n``: ``[N, k, D]``."""
    tensor = tensor.expand(rows.shape[0], -1, -1)
    return tensor.gather(1, rows.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]))


def _dynamic(context) -> bool:
    """Whether the export has dynamic shapes. mmdeploy finds the context from the caller's
    frame: pass ``FUNCTION_REWRITER.get_context`` from the rewritten function itself."""
    from mmdeploy.utils import is_dynamic_shape
    return is_dynamic_shape(context.cfg)


def _level_inputs(head, cls_scores, bbox_preds, dynamic: bool):
    """Per level: scores ``[N, A, C]``, box deltas ``[N, A, D]`` and priors ``[1, A, 4]``."""
    from mmdet.structures.bbox import get_box_tensor
    batch = cls_scores[0].shape[0]
    priors = head.prior_generator.grid_priors([score.shape[-2:] for score in cls_scores],
                                              dtype=bbox_preds[0].dtype,
                                              device=bbox_preds[0].device)
    for cls_score, bbox_pred, level_priors in zip(cls_scores, bbox_preds, priors):
        level_priors = get_box_tensor(level_priors).unsqueeze(0)
        if not dynamic:
            level_priors = level_priors.data
        scores = cls_score.permute(0, 2, 3, 1).reshape(batch, -1, head.cls_out_channels)
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(batch, -1, head.bbox_coder.encode_size)
        yield scores, deltas, level_priors


def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, batch_img_metas=None,
                    cfg=None, rescale=False, with_nms=True, **kwargs):
    """``BaseDenseHead.predict_by_feat`` for export: mmdet's pair-wise pre-NMS top-k per
    level, boxes clipped to each image, ``min_bbox_size``, per-class NMS."""
    from mmdeploy.core import FUNCTION_REWRITER
    cfg = self.test_cfg
    if score_factors is not None or not with_nms:  # serves() keeps such heads away from here
        raise ValueError(f'{type(self).__name__}: the pair-wise pre-NMS rewrite takes heads '
                         'without score factors, with NMS')
    img_shapes = image_shapes(batch_img_metas)
    level_scores, level_boxes = [], []
    levels_in = _level_inputs(self, cls_scores, bbox_preds,
                              _dynamic(FUNCTION_REWRITER.get_context()))
    for scores, deltas, priors in levels_in:
        values, rows, labels = _topk_pairs(scores.sigmoid(), cfg.get('nms_pre', -1))
        boxes = _decode(self.bbox_coder, _gather_rows(priors, rows), _gather_rows(deltas, rows),
                        img_shapes)
        level_scores.append(_one_hot(drop_small(boxes, values, cfg.get('min_bbox_size', -1)),
                                     labels, self.cls_out_channels))
        level_boxes.append(boxes)
    return _nms(torch.cat(level_boxes, 1), torch.cat(level_scores, 1), cfg,
                cfg.get('score_thr', 0.0), cfg.get('max_per_img', 100))


def rpn_predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, batch_img_metas=None,
                        cfg=None, rescale=False, with_nms=True, **kwargs):
    """``RPNHead.predict_by_feat`` for export: per level the ``nms_pre`` best anchors, boxes
    clipped to each image, ``min_bbox_size``, NMS per level, the ``max_per_img`` best."""
    from mmdeploy.core import FUNCTION_REWRITER
    cfg = self.test_cfg if cfg is None else cfg
    img_shapes = image_shapes(batch_img_metas)
    level_scores, level_boxes, levels = [], [], []
    levels_in = _level_inputs(self, cls_scores, bbox_preds,
                              _dynamic(FUNCTION_REWRITER.get_context()))
    for level, (scores, deltas, priors) in enumerate(levels_in):
        scores = scores.sigmoid()[..., 0] if self.use_sigmoid_cls else \
            scores.softmax(-1)[..., 0]  # mmdet's foreground: the first channel
        nms_pre = cfg.get('nms_pre', -1)
        if nms_pre > 0:
            scores, rows = scores.topk(nms_pre)  # mmdeploy clamps k to the level's size
            deltas, priors = _gather_rows(deltas, rows), _gather_rows(priors, rows)
        boxes = _decode(self.bbox_coder, priors, deltas, img_shapes)
        level_scores.append(drop_small(boxes, scores, cfg.get('min_bbox_size', -1)))
        level_boxes.append(boxes)
        levels.append(torch.full_like(scores, level, dtype=torch.long))
    scores = _one_hot(torch.cat(level_scores, 1), torch.cat(levels, 1), len(level_scores))
    return _nms(torch.cat(level_boxes, 1), scores, cfg, 0.0, cfg.max_per_img)


def _pairs_above(count: int, classes: int, score_thr: float, softmax: bool) -> int:
    """At most how many (RoI, class) pairs can score above ``score_thr``: with softmax scores
    (summing to at most 1) fewer than ``1 / score_thr`` per RoI."""
    if softmax and score_thr > 0:
        return count * min(classes, math.floor(1 / score_thr) + 1)
    return count * classes


def roi_predict_bbox(self, x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale=False):
    """``StandardRoIHead.predict_bbox`` for export: a box decoded per class and clipped to
    each image, every (RoI, class) pair above ``score_thr`` into per-class NMS. Padding rows
    of the proposals (score 0: the RPN kept fewer) give no detection."""
    head = self.bbox_head
    proposals = rpn_results_list[0]  # [N, R, 5], padded with zero rows
    batch, count = proposals.shape[:2]
    index = torch.arange(batch, device=proposals.device).to(proposals.dtype)
    rois = torch.cat([index.view(-1, 1, 1).expand(batch, count, 1), proposals[..., :4]], -1)
    results = self._bbox_forward(x, rois.reshape(-1, 5))
    logits = results['cls_score'].reshape(batch, count, -1)
    scores = (head.loss_cls.get_activation(logits) if head.custom_cls_channels
              else F.softmax(logits, dim=-1))[..., :head.num_classes]
    scores = scores * (proposals[..., 4:5] > 0).to(scores.dtype)
    classes = head.num_classes
    deltas = results['bbox_pred'].reshape(batch, count, -1, head.bbox_coder.encode_size)
    deltas = deltas.expand(-1, -1, classes, -1)  # class-agnostic: one box for every class
    priors = proposals[..., None, :4].expand(-1, -1, classes, -1)
    boxes = _decode(head.bbox_coder, priors.reshape(batch, count * classes, 4),
                    deltas.reshape(batch, count * classes, -1), image_shapes(batch_img_metas))
    score_thr = rcnn_test_cfg.get('score_thr', 0.0)
    values, rows, labels = _topk_pairs(
        scores.reshape(batch, count * classes, 1),
        _pairs_above(count, classes, score_thr, not head.custom_cls_channels))
    return _nms(_gather_rows(boxes, rows), _one_hot(values, rows % classes, classes),
                rcnn_test_cfg, score_thr, rcnn_test_cfg.max_per_img)


def _set_img_shape(data_samples: list, img_shape: torch.Tensor) -> list:
    """Each sample's ``img_shape`` from its row of the graph input; all of it under
    :data:`IMG_SHAPES` (exports trace one sample, graphs may take more)."""
    for i, sample in enumerate(data_samples):
        sample.set_field(name='img_shape', value=img_shape[i], field_type='metainfo')
        sample.set_field(name=IMG_SHAPES, value=img_shape, field_type='metainfo')
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


class HeadResolutionLabels(nn.Module):
    """What a segmentation export with ``argmax_before_upsampling`` traces: ``input`` -> the
    label map at the decode head's own resolution, ``[N, 1, h, w]`` int64 (a one-channel head:
    its sigmoid above the head's threshold, as mmseg)."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        from mmseg.models.segmentors import EncoderDecoder
        if not isinstance(segmentor, EncoderDecoder) or isinstance(segmentor.decode_head,
                                                                   nn.ModuleList):
            raise DeployError(f'codebase_config.argmax_before_upsampling exports an '
                              f'EncoderDecoder with one decode head; {type(segmentor).__name__}'
                              ' is not one: use a deploy config without it.')
        if (segmentor.test_cfg or {}).get('mode', 'whole') != 'whole' or getattr(
                segmentor.decode_head, 'align_corners', False):
            raise DeployError('codebase_config.argmax_before_upsampling labels whole images at '
                              'the head\'s resolution, upsampled by nearest pixel centre: a '
                              "model tested with test_cfg.mode='slide' or a head with "
                              'align_corners=True is not labelled that way; use a deploy '
                              'config without it.')
        self.segmentor = segmentor

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        head = self.segmentor.decode_head
        logits = head(self.segmentor.extract_feat(inputs))
        if head.out_channels == 1:
            return (logits.sigmoid() > head.threshold).long()
        return logits.argmax(dim=1, keepdim=True)


def _same(obj: object, base: type, *methods: str) -> bool:
    """Whether ``obj`` is a ``base`` whose ``methods`` are mmdet's own (not overridden)."""
    return isinstance(obj, base) and all(getattr(type(obj), name) is getattr(base, name)
                                         for name in methods)


def _standard_nms(cfg: Optional[dict]) -> bool:
    nms = (cfg or {}).get('nms') or {}
    return nms.get('type', 'nms') == 'nms' and not nms.get('class_agnostic', False)


def serves(model: nn.Module) -> bool:
    """Whether the model's dense head is one :func:`predict_by_feat` reproduces exactly."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    head = getattr(model, 'bbox_head', None)
    if not _same(head, BaseDenseHead, 'predict_by_feat', '_predict_by_feat_single',
                 '_bbox_post_process'):
        return False
    return (getattr(head, 'use_sigmoid_cls', False) and _standard_nms(head.test_cfg)
            and (head.test_cfg or {}).get('nms_pre', -1) > 0
            and not any(hasattr(head, name) for name in SCORE_FACTOR_LAYERS))


def serves_two_stage(model: nn.Module) -> bool:
    """Whether the RPN and RoI head are mmdet's ``RPNHead`` and ``StandardRoIHead`` with a
    ``BBoxHead`` (Faster / Mask R-CNN), which :func:`rpn_predict_by_feat` and
    :func:`roi_predict_bbox` reproduce."""
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.roi_heads import StandardRoIHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    rpn, roi = getattr(model, 'rpn_head', None), getattr(model, 'roi_head', None)
    return (_same(rpn, RPNHead, 'predict_by_feat', '_predict_by_feat_single',
                  '_bbox_post_process') and _standard_nms(rpn.test_cfg)
            and _same(roi, StandardRoIHead, 'predict_bbox', '_bbox_forward')
            and _same(roi.bbox_head, BBoxHead, 'predict_by_feat', '_predict_by_feat_single')
            and _standard_nms(roi.test_cfg))


def _scaled(side, factor: float):
    """``int(side * factor)`` as mmseg computes it, kept in the graph when ``side`` is traced."""
    if float(factor).is_integer():
        return side * int(factor)
    if isinstance(side, torch.Tensor):
        return torch.floor(side * factor).long()
    return int(side * factor)


def seg_upsample_forward(self, x: torch.Tensor) -> torch.Tensor:
    """mmseg's ``Upsample.forward`` with the output size computed in the graph."""
    size = self.size or [_scaled(side, self.scale_factor) for side in x.shape[-2:]]
    return F.interpolate(x, size, None, self.mode, self.align_corners)


def _has_seg_upsample(model: nn.Module) -> bool:
    try:
        from mmseg.models.utils import Upsample
    except ImportError:
        return False
    return any(isinstance(module, Upsample) for module in model.modules())


def _rewrites(model: nn.Module, backend: str) -> List[tuple]:
    from mmdet.models.detectors import SingleStageDetector, TwoStageDetector
    found = [(SEG_UPSAMPLE, seg_upsample_forward)] if _has_seg_upsample(model) else []
    if isinstance(model, SingleStageDetector):
        found.append((SINGLE_STAGE, single_stage_forward))
    elif isinstance(model, TwoStageDetector):
        found.append((TWO_STAGE, two_stage_forward))
        if serves_two_stage(model):
            found += [(RPN, rpn_predict_by_feat), (ROI_BBOX, roi_predict_bbox)]
        if backend == 'openvino':
            # mmdeploy's OpenVINO rewrite exports OpenVINO's own RoI feature extractor (its own
            # level assignment, image 0 only); we compile the ONNX, whose RoiAlign is mmdet's
            from mmdeploy.codebase.mmdet.models.roi_heads.single_level_roi_extractor import \
                single_roi_extractor__forward
            found.append((ROI_EXTRACTOR, single_roi_extractor__forward))
    if serves(model):
        found.append((FUNC, predict_by_feat))
    return found


@contextlib.contextmanager
def rewrites_for(model: nn.Module, backend: str) -> Iterator[List[str]]:
    """Inside the block: our rewrites for ``model`` registered in mmdeploy for ``backend``
    (they win over mmdeploy's default ones). mmdeploy's registry is as before afterwards,
    exception or not. Yields the rewritten functions."""
    rewrites = _rewrites(model, backend)
    if not rewrites:
        yield []
        return
    from mmdeploy.core import FUNCTION_REWRITER
    records = FUNCTION_REWRITER._registry._rewrite_records
    before = {name: list(records[name]) if name in records else None for name, _ in rewrites}
    for name, function in rewrites:
        FUNCTION_REWRITER.register_rewriter(name, backend=backend)(function)
        records[name].insert(0, records[name].pop())  # mmdeploy applies the first valid one
    try:
        yield [name for name, _ in rewrites]
    finally:
        for name, saved in before.items():
            if saved is None:
                records.pop(name, None)
            else:
                records[name] = saved
