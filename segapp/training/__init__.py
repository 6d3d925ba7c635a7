"""Training the image path on COCO-format instance masks (`segapp train`).

- `data`: COCO instances as augmented samples at the model input
- `prompts`: simulated prompts (jittered boxes, positive points, corrective clicks)
- `losses`: focal, dice, IoU and object-score losses with the min-over-multimask choice
- `trainer`: the loop, checkpoints, resume, logs and validation
- `steps`: what every trainer's step shares (lr schedule, autocast, per-step generator)
- `state`: last.pt (atomic save, resume, RNG state) and the weights' metadata, for all trainers

How to use it: docs/training.md.
"""
from segapp.training.data import AugmentConfig, CocoInstanceDataset
from segapp.training.losses import LossWeights
from segapp.training.trainer import TrainConfig, Trainer

__all__ = ["AugmentConfig", "CocoInstanceDataset", "LossWeights", "TrainConfig", "Trainer"]
