"""Training: the image path on COCO-format instance masks (`segapp train`), the video memory
on clips (`segapp train-video`) and the trunk as a masked autoencoder (`segapp pretrain`).

- `data`: COCO instances as augmented samples at the model input (`augment`: presets and steps)
- `prompts`: simulated prompts (jittered boxes, positive points, corrective clicks)
- `video_data`: clips for `train-video` (`clip_augment`: their augmentation)
- `video_trainer`, `pretrain` (with `mae`, `image_folders`): the other two trainers
- `losses`: focal, dice, IoU and object-score losses with the min-over-multimask choice
- `recipe`: `TrainConfig`, its checks, and what a resumed run may change
- `trainer`: the loop, checkpoints, resume, logs and validation
- `parts`: the model's parts, which may be frozen, and the AdamW groups over the trained ones
- `steps`: what every trainer's step shares (lr schedule, autocast, per-step generator)
- `state`: last.pt (atomic save, resume, RNG state) and the weights' metadata, for all trainers
- `epochs`: the outputs after each epoch (best, log row, last.pt) and at the end (final)

How to use it: docs/training.md.
"""
from segapp.training.augment import AugmentConfig
from segapp.training.data import CocoInstanceDataset
from segapp.training.losses import LossWeights
from segapp.training.recipe import TrainConfig
from segapp.training.trainer import Trainer

__all__ = ["AugmentConfig", "CocoInstanceDataset", "LossWeights", "TrainConfig", "Trainer"]
