"""Does a deployed model give PyTorch's detections, masks or label maps?

Thresholds (the tool's defaults), both ways: every one of PyTorch's top-k detections
with a score above ``score_thr`` has a backend detection of the same label with box
IoU >= 0.99 and a score within 1e-3, and every such backend detection has a PyTorch
one; both sides have as many detections above the threshold (up to those within the
score tolerance of it); only where the other side stopped at the model's ``max_per_img``
(it kept exactly that many), a detection scoring within the tolerance of that side's lowest
kept score may be missing there (a near-tie at the cut); the matched masks have IoU >=
0.98, and a backend without masks where PyTorch has them fails; label maps agree on >=
99.9 % of their pixels.
Nothing above the threshold on either side is a failure ("0 compared") unless
``allow_empty``.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import torch


@dataclass
class Tolerances:
    score_thr: float = 0.3
    top_k: int = 100
    box_iou: float = 0.99
    score_diff: float = 1e-3
    mask_iou: float = 0.98
    pixel_agreement: float = 0.999
    allow_empty: bool = False
    max_per_img: Optional[int] = None  # the model's cut; None: no near-tie exemption


@dataclass
class ParityReport:
    """What was compared and every difference beyond the tolerances."""
    compared: int = 0
    failures: List[str] = field(default_factory=list)
    worst: dict = field(default_factory=dict)
    counts: Optional[List[int]] = None  # detections above the threshold: PyTorch, backend

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return dict(ok=self.ok, compared=self.compared, counts=self.counts, worst=self.worst,
                    failures=self.failures)


class ParityError(RuntimeError):
    """The backend's results differ from PyTorch's beyond the tolerances."""


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``(len(a), len(b))``."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _worse(report: ParityReport, key: str, value: float, lower_is_worse: bool) -> None:
    old = report.worst.get(key)
    if old is None or (value < old if lower_is_worse else value > old):
        report.worst[key] = value


def _describe(instances, i: int) -> str:
    box = [round(v, 1) for v in instances.bboxes[i].tolist()]
    return f'(label {int(instances.labels[i])}, score {float(instances.scores[i]):.4f}, box {box})'


def _confident(instances, tol: Tolerances) -> torch.Tensor:
    order = instances.scores.argsort(descending=True)
    return order[instances.scores[order] > tol.score_thr][:tol.top_k]


def _match(reference, candidate, side: str, other: str, tol: Tolerances,
           report: ParityReport, masks: bool) -> None:
    """Every confident detection of ``reference`` has a twin in ``candidate``: same label,
    box IoU and score within the tolerances (and mask IoU, with ``masks``)."""
    # where the other side stopped at max_per_img, a detection scoring like its last kept one
    # may fall either side of the cut (near-ties): missing there is not a difference
    cut = tol.max_per_img is not None and len(candidate) >= tol.max_per_img > 0
    cutoff = float(candidate.scores.min()) + tol.score_diff if cut else -1.0
    for i in _confident(reference, tol).tolist():
        label, score, box = reference.labels[i], reference.scores[i], reference.bboxes[i]
        same_label = (candidate.labels == label).nonzero().flatten()
        report.compared += 1
        where = f'{side} detection {i} {_describe(reference, i)}'
        tie = float(score) <= cutoff
        if len(same_label) == 0:
            if not tie:
                report.failures.append(f'{where}: {other} has no detection of this label')
            continue
        ious = box_iou(box[None], candidate.bboxes[same_label])[0]
        # among the boxes that overlap as required, the closest score
        close = same_label[ious >= tol.box_iou]
        best_iou = float(ious.max())
        if len(close) == 0:
            if not tie:
                _worse(report, 'box_iou', best_iou, lower_is_worse=True)
                report.failures.append(f"{where}: best IoU with {other}'s boxes of this "
                                       f'label is {best_iou:.4f} < {tol.box_iou}')
            continue
        _worse(report, 'box_iou', best_iou, lower_is_worse=True)
        diffs = (candidate.scores[close] - score).abs()
        j = close[diffs.argmin()]
        diff = float(diffs.min())
        _worse(report, 'score_diff', diff, lower_is_worse=False)
        if diff > tol.score_diff:
            report.failures.append(f'{where}: score differs by {diff:.2e} > {tol.score_diff}')
        if masks:
            iou = mask_iou(reference.masks[i], candidate.masks[j])
            _worse(report, 'mask_iou', iou, lower_is_worse=True)
            if iou < tol.mask_iou:
                report.failures.append(f'{where}: mask IoU {iou:.4f} < {tol.mask_iou}')


def compare_instances(reference, candidate, tol: Optional[Tolerances] = None) -> ParityReport:
    """PyTorch's confident detections (``reference``, an mmdet ``InstanceData``) against the
    backend's (``candidate``) and back; their counts; masks when PyTorch has them."""
    tol = tol or Tolerances()
    report = ParityReport()
    masks = 'masks' in reference
    if masks and 'masks' not in candidate:
        report.failures.append('PyTorch returns masks, the backend none: the deploy config '
                               'exports boxes only (use an instance-seg config)')
        masks = False
    _match(reference, candidate, 'PyTorch', 'the backend', tol, report, masks)
    forward = report.compared
    _match(candidate, reference, 'backend', 'PyTorch', tol, report, False)
    report.compared = forward
    counts = [int((side.scores > tol.score_thr).sum()) for side in (reference, candidate)]
    borderline = sum(int(((side.scores - tol.score_thr).abs() <= tol.score_diff).sum())
                     for side in (reference, candidate))
    report.counts = counts
    if abs(counts[0] - counts[1]) > borderline:
        report.failures.append(f'PyTorch has {counts[0]} detections above {tol.score_thr}, the '
                               f'backend {counts[1]}')
    if counts == [0, 0] and not tol.allow_empty:
        report.failures.append(f'0 compared: neither PyTorch nor the backend has a detection '
                               f'above {tol.score_thr}; use an image the model detects '
                               'something in (or --allow-empty)')
    return report


def compare_label_maps(reference: torch.Tensor, candidate: torch.Tensor,
                       tol: Optional[Tolerances] = None) -> ParityReport:
    """Fraction of equal pixels between two label maps of the same shape."""
    tol = tol or Tolerances()
    report = ParityReport(compared=reference.numel())
    if reference.shape != candidate.shape:
        report.failures.append(f'label map shapes differ: PyTorch {tuple(reference.shape)}, '
                               f'backend {tuple(candidate.shape)}')
        return report
    agreement = (reference == candidate).float().mean().item()
    report.worst['pixel_agreement'] = agreement
    if agreement < tol.pixel_agreement:
        report.failures.append(f'only {100 * agreement:.3f}% of the pixels have the same label '
                               f'(< {100 * tol.pixel_agreement:.1f}%)')
    return report


def max_per_img_of(model_cfg) -> Optional[int]:
    """The detector's ``max_per_img`` (Mask R-CNN: its RoI head's); None for a segmentor."""
    test_cfg = (model_cfg.get('model') or {}).get('test_cfg') or {}
    test_cfg = test_cfg.get('rcnn', test_cfg)
    return test_cfg.get('max_per_img')


def compare_results(reference, candidate, tol: Optional[Tolerances] = None) -> ParityReport:
    """Compare one mmdet or mmseg data sample from PyTorch with the backend's."""
    if 'pred_sem_seg' in reference:
        return compare_label_maps(reference.pred_sem_seg.data, candidate.pred_sem_seg.data, tol)
    return compare_instances(reference.pred_instances, candidate.pred_instances, tol)
