"""Promptable-segmentation evaluation: COCO-format datasets (`segapp eval coco`), image folders
with mask folders (`segapp eval folder`) and DAVIS-layout videos (`segapp eval video`).

- `coco`: loading, instance selection, mask decoding, skipped-instance accounting
- `clicks`: simulated clicks at the centre of the larger error
- `metrics`: IoU, mIoU@k, NoC, breakdowns by area and category
- `baselines`: model-free predictors (filled box, GrabCut) with the predictor interface
- `runner`: the evaluation loop and its outputs (report.json, per_instance.csv, plot)
- `folder`: img/ + gt/ benchmarks as instances for the same loop
- `davis`: DAVIS-layout folders as checked sequences (skips naming the file)
- `video`: trackers (first-mask baseline, any SAM2VideoPredictor), J, F, J&F
- `boundary`: the DAVIS boundary F-measure
- `outputs`: versions, report.json, console tables and charts shared by all protocols

The protocol is described in docs/evaluation.md.
"""
from segapp.evaluation.coco import CocoInstances, load_coco_instances
from segapp.evaluation.metrics import InstanceResult
from segapp.evaluation.runner import EvalResult, evaluate, iter_evaluate

__all__ = ["CocoInstances", "EvalResult", "InstanceResult", "evaluate", "iter_evaluate",
           "load_coco_instances"]
