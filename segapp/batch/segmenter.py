"""The model stage of `segapp segment`: one model, its predictors, and the per-input logic.

Images with prompts are embedded together (`ImagePredictor.set_image_batch`) and decoded per
image in as few decoder calls as the prompts allow; images without prompts go through the
automatic mask generator. A video is opened once as a frame source: the tracker reads it, and
the same frames go to the writer for the overlay video.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from segapp.batch.config import ModelSpec, Options
from segapp.batch.decoding import Decoded
from segapp.batch.inputs import Input
from segapp.batch.outputs import Segmentation
from segapp.batch.prompts import MAX_OBJECT_ID, ObjectPrompt, Prompts
from segapp.formats.id_maps import MAX_8BIT_ID, instance_id_map
from segapp.video.propagation import BACKWARD, FORWARD, propagate_both_ways

NO_PROMPTS = "no prompts for this input in the prompts file"

# (frame index, result, the frame's RGB pixels or None) for each frame of a video
FrameResult = tuple[int, Segmentation, "np.ndarray | None"]


class Segmenter:
    """Per-input model logic: prompted or segment-everything images (encoded in batches),
    and videos (prompts or segment-everything on the first frame, then tracking)."""

    def __init__(self, spec: ModelSpec, options: Options, prompts: Prompts | None) -> None:
        import segapp

        self.spec = spec
        self.options = options
        self.prompts = prompts
        self.model = spec.build()
        self.predictor = segapp.ImagePredictor(self.model)
        self._amg = None
        self._video = None

    # -------------------------------------------------------------- prompts
    def image_objects(self, item: Input) -> list[ObjectPrompt] | None:
        """Objects to segment (None: segment everything); raises LookupError to skip the input."""
        return self._objects(self.prompts.for_image if self.prompts is not None else None, item)

    def video_objects(self, item: Input) -> dict[int, list[ObjectPrompt]] | None:
        """{frame: objects prompted on it} (None: segment everything); LookupError: skip it."""
        return self._objects(self.prompts.for_video if self.prompts is not None else None, item)

    def _objects(self, lookup: Callable[[str], object] | None, item: Input):
        if lookup is None:  # no prompts file: segment everything
            return None
        found = lookup(item.rel)
        if found is None:
            if self.prompts.default == "everything":
                return None
            raise LookupError(NO_PROMPTS)
        return found

    @property
    def amg(self):
        if self._amg is None:
            import segapp

            self._amg = segapp.AutomaticMaskGenerator(
                self.model, points_per_side=self.options.points_per_side,
                pred_iou_thresh=self.options.pred_iou_thresh,
                stability_score_thresh=self.options.stability_score_thresh, output_mode="binary_mask")
        return self._amg

    # -------------------------------------------------------------- images
    def segment_images(self, decoded: list[Decoded]) -> list[Segmentation | Exception]:
        """One result (or the error) per decoded image; prompted images share one encoder batch."""
        results: list[Segmentation | Exception | None] = [None] * len(decoded)
        prompted: list[tuple[int, list[ObjectPrompt]]] = []
        for i, d in enumerate(decoded):
            try:
                objects = self.image_objects(d.item)
            except LookupError as err:
                results[i] = err
                continue
            if objects is not None and self.prompts.source == "coco":
                try:
                    self.prompts.check_size(d.item.rel, d.image.shape[:2])
                except ValueError as err:  # this image fails, the others go on
                    results[i] = err
                    continue
            if objects is None:
                try:
                    results[i] = self.segment_everything(d.image)
                except Exception as err:  # noqa: BLE001 - reported per input
                    results[i] = err
            else:
                prompted.append((i, objects))
        if prompted:
            try:
                self.predictor.set_image_batch([decoded[i].image for i, _ in prompted])
            except Exception as err:  # noqa: BLE001 - the whole batch failed; reported per input
                for i, _ in prompted:
                    results[i] = err
                return results
            for b, (i, objects) in enumerate(prompted):
                try:
                    results[i] = self._predict_objects(b, objects, decoded[i].image.shape[:2])
                except Exception as err:  # noqa: BLE001 - a bad prompt fails its input only
                    results[i] = err
            self.predictor.reset_predictor()
        return results

    def _predict_objects(self, batch_idx: int, objects: list[ObjectPrompt], hw: tuple[int, int]) -> Segmentation:
        """Decode all objects of image `batch_idx` of the current batch, in as few decoder calls
        as the prompts allow: objects with and without a box go separately, and single-click
        objects (ambiguous: three candidates, the best kept) apart from the others."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for k, obj in enumerate(objects):
            single_click = obj.box is None and obj.points is not None and len(obj.points) == 1
            groups.setdefault((obj.box is not None, single_click), []).append(k)
        masks: list[np.ndarray | None] = [None] * len(objects)
        scores = [0.0] * len(objects)
        for (has_box, multimask), members in groups.items():
            coords = labels = boxes = None
            with_points = [objects[k] for k in members if objects[k].points is not None]
            if with_points:
                n = max(len(o.points) for o in with_points)
                coords = np.zeros((len(members), n, 2))
                labels = np.full((len(members), n), -1, dtype=np.int32)  # -1: padding, ignored
                for row, k in enumerate(members):
                    if objects[k].points is not None:
                        coords[row, :len(objects[k].points)] = objects[k].points
                        labels[row, :len(objects[k].points)] = objects[k].labels
            if has_box:
                boxes = np.stack([objects[k].box for k in members])
            prompts = self.predictor.prompts_to_input(point_coords=coords, point_labels=labels, box=boxes,
                                                      img_idx=batch_idx)
            m, iou, _ = self.predictor.predict_torch(**prompts._asdict(), multimask_output=multimask,
                                                     img_idx=batch_idx)
            m = m.reshape(len(members), -1, *hw).cpu().numpy()  # bool
            iou = iou.reshape(len(members), -1).float().cpu().numpy()
            best = iou.argmax(axis=1)
            for row, k in enumerate(members):
                masks[k] = m[row, best[row]]
                scores[k] = float(iou[row, best[row]])
        ids = [o.obj_id for o in objects]
        return Segmentation(instance_id_map(masks, hw, ids), [
            {"instance_id": o.obj_id, "score": s, "category_id": o.category_id} for o, s in zip(objects, scores)])

    def segment_everything(self, image: np.ndarray) -> Segmentation:
        records = self.amg.generate(image)[:MAX_OBJECT_ID]
        records.sort(key=lambda r: -r["area"])
        ids = list(range(1, len(records) + 1))
        seg = Segmentation(instance_id_map([r["segmentation"] for r in records], image.shape[:2], ids), [
            {"instance_id": i, "score": r["predicted_iou"], "category_id": 1} for i, r in zip(ids, records)])
        present = set(np.unique(seg.id_map).tolist())
        seg.objects = [o for o in seg.objects if o["instance_id"] in present]  # fully covered ones
        return seg

    # -------------------------------------------------------------- videos
    @property
    def video_predictor(self):
        """A video predictor over the same model (one set of weights for images and videos)."""
        if self._video is None:
            import torch

            from segapp.video.predictor import VideoPredictor

            dtype = torch.bfloat16 if self.options.bf16_attention else torch.float32
            self._video = VideoPredictor(self.model, attention_dtype=dtype)
        return self._video

    def segment_video(self, d: Decoded, with_frames: bool = False) -> Iterator[FrameResult]:
        """(frame index, result, pixels) for every frame, in order; pixels: the frame's [H, W, 3]
        uint8 RGB with `with_frames` (None when it cannot be decoded), else None. Prompts on
        frame F: tracked forward from F, and backward from the first prompted frame to frame 0."""
        from segapp.video.frames import open_frames

        frames = self.video_objects(d.item)
        self.video_predictor  # first: a model that cannot track (images only) fails at once
        source = open_frames(str(d.item.path))  # the video's one decoder: tracking and overlays

        def pixels(frame_idx: int) -> np.ndarray | None:
            return source.get(frame_idx) if with_frames and frame_idx < len(source) else None

        try:
            if frames is None and self.options.track_every is not None:
                yield from self.track_everything(d, source, pixels)
            else:
                yield from self._track_prompts(d, frames, source, pixels)
        finally:
            source.close()

    def _track_prompts(self, d: Decoded, frames: dict[int, list[ObjectPrompt]] | None, source,
                       pixels: Callable[[int], np.ndarray | None]) -> Iterator[FrameResult]:
        """Prompted objects (or, frames None, those found on the first frame) tracked through
        the video from the frame source `source`; `pixels(frame)` is asked right after a frame
        is tracked, while the source still holds it."""
        vp = self.video_predictor
        first_masks: list[tuple[int, np.ndarray]] = []
        if frames is None:  # segment everything on the first frame, then track those masks
            first = self.segment_everything(d.image)
            first_masks = [(o["instance_id"], first.id_map == o["instance_id"]) for o in first.objects]
            frames = {}
        state = vp.init_state(source)
        for obj_id, mask in first_masks:
            vp.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=mask)
        num_frames = state.num_frames
        hw = d.image.shape[:2]
        categories = {o.obj_id: o.category_id for objs in frames.values() for o in objs}
        categories.update({obj_id: 1 for obj_id, _ in first_masks})
        for frame_idx, objects in frames.items():
            if frame_idx >= num_frames:
                raise ValueError(f"prompts on frame {frame_idx}, but the video has {num_frames} frames")
            for o in objects:
                vp.add_new_points_or_box(state, frame_idx=frame_idx, obj_id=o.obj_id, points=o.points,
                                         labels=o.labels, box=o.box)
        sixteen = max(categories, default=0) > MAX_8BIT_ID  # one PNG depth for all frames

        def empty() -> Segmentation:
            return Segmentation(np.zeros(hw, np.uint16), sixteen_bit=sixteen)

        def result(obj_ids, logits) -> Segmentation:
            masks = logits[:, 0].cpu().numpy() > 0.0
            ids = [int(i) for i in obj_ids]
            return Segmentation(instance_id_map(masks, hw, ids), [
                {"instance_id": i, "score": 1.0, "category_id": categories.get(i, 1)} for i in ids],
                sixteen_bit=sixteen)

        # Tracked backward from the first prompted frame (the frames before it), then forward.
        prompted = [f for f, objects in frames.items() if objects] + ([0] if first_masks else [])
        before: dict[int, tuple[Segmentation, np.ndarray | None]] = {}
        produced = 0

        def earlier(frame_idx: int) -> FrameResult:
            seg, rgb = before.get(frame_idx) or (empty(), pixels(frame_idx))
            return frame_idx, seg, rgb

        if prompted:
            start = min(prompted)
            for frame_idx, obj_ids, logits, direction in propagate_both_ways(
                    vp, state, start, directions=(BACKWARD, FORWARD)):
                if direction == BACKWARD:
                    if frame_idx < start:
                        before[frame_idx] = result(obj_ids, logits), pixels(frame_idx)
                    continue
                for gap in range(produced, frame_idx):  # frames before start, undecodable ones
                    yield earlier(gap)
                yield frame_idx, result(obj_ids, logits), pixels(frame_idx)
                produced = frame_idx + 1
        for gap in range(produced, num_frames):
            yield earlier(gap)
        vp.reset_state(state)

    def track_everything(self, d: Decoded, source, pixels: Callable[[int], np.ndarray | None]
                         ) -> Iterator[FrameResult]:
        """(frame index, result, pixels) for every frame of the frame source `source`: segment everything
        every `track_every` frames, new objects added, duplicates merged, vanished ones dropped
        (VideoAutoTracker). Ids are never reused, so PNGs are 16-bit; unreadable frames come out
        empty."""
        from segapp.video.auto_tracker import VideoAutoTracker

        tracker = VideoAutoTracker(self.video_predictor, generator=self.amg, every=self.options.track_every)
        hw = d.image.shape[:2]
        produced = 0
        try:
            for frame_idx, obj_ids, logits in tracker.track(source):
                for gap in range(produced, frame_idx):
                    yield gap, Segmentation(np.zeros(hw, np.uint16), sixteen_bit=True), pixels(gap)
                ids = [int(i) for i in obj_ids]
                masks = logits[:, 0].cpu().numpy() > 0.0
                yield frame_idx, Segmentation(instance_id_map(masks, hw, ids), [
                    {"instance_id": i, "score": 1.0, "category_id": 1} for i in ids], sixteen_bit=True), \
                    pixels(frame_idx)
                produced = frame_idx + 1
        finally:
            tracker.close()
        for gap in range(produced, d.num_frames):
            yield gap, Segmentation(np.zeros(hw, np.uint16), sixteen_bit=True), pixels(gap)


__all__ = ["Segmenter", "NO_PROMPTS"]
