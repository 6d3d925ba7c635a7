"""The prompt rounds of one `segapp train` step, and the whole step split over CPU threads.

`run_rounds` is steps 2-4 of `Trainer.compute_loss` (see segapp/training/trainer.py) for a set
of prompts: first prompt, `correction_rounds` corrective clicks, each round's loss. Every
prompt's rounds are independent of the others' (each has its own image embedding row, mask
input and clicks), and the step's random numbers are drawn ahead (`draw`, in the order and the
sizes in which the rounds would draw them one after another, so they are the same numbers).
So a step can be split (`run_rounds_threaded`): the image encoder on parts of the images, the
rounds on parts of the prompts, the encoder's backward on the image parts again, each part on a
thread of its own, and the parts' losses and gradients added up. On CPU, a few threads each
running whole parts keep the cores busier than every small operation split over all cores
(measured on 2 cores: the rounds of 26 prompts in 0.8 s instead of 1.1 s, the encoder's forward
and backward of 4 images in 0.33 s instead of 0.42 s). The parts' terms are shares of the whole
batch's means (`multimask_loss(totals=...)`), so the sum is the step's loss; the result equals
one thread's up to float rounding, and is the same on every run with the same number of threads
(the parts are fixed, their gradients added in order).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from segapp.image_predictor import LOW_RES_LOGIT_CLAMP
from segapp.training import prompts as P
from segapp.training.losses import multimask_loss

# Most threads the rounds of a step are split over (each with the intra-op threads left).
MAX_ROUND_THREADS = 4
# Fewest prompts per thread worth a thread of their own.
MIN_PROMPTS_PER_THREAD = 4


def loss_targets_at(masks: torch.Tensor, size: int) -> torch.Tensor:
    """masks [P, S, S] bool at the input -> [P, 1, size, size] float: the share of each cell of
    the decoder's low-resolution grid that the object covers (area averaging), the soft
    targets of the loss at the mask resolution (`loss_resolution="mask"`)."""
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="area")


@dataclass
class Draws:
    """The step's random numbers: `first` [P, 4] (box jitter) or [P] (one point each), and one
    [P] for each corrective click round."""

    first: torch.Tensor
    clicks: list[torch.Tensor]

    def rows(self, index: torch.Tensor) -> "Draws":
        return Draws(self.first[index], [u[index] for u in self.clicks])


def draw(generator: torch.Generator, prompts: int, use_box: bool, correction_rounds: int,
         device: torch.device) -> Draws:
    """The numbers the rounds of `prompts` prompts draw from `generator`, in the same order."""
    if use_box:
        first = P.draw_uniform(generator, (prompts, 4), device, torch.float32)
    else:
        first = P.draw_uniform(generator, (prompts,), device, P.POINT_DRAW_DTYPE)
    clicks = [P.draw_uniform(generator, (prompts,), device, P.POINT_DRAW_DTYPE) for _ in range(correction_rounds)]
    return Draws(first, clicks)


@dataclass
class RoundsOutput:
    """loss: these prompts' share of the step loss (the mean over rounds of each round's loss);
    values: their shares of [loss, focal, dice, iou, object_score (means over rounds),
    training IoU after the first prompt, after the last round] (detached)."""

    loss: torch.Tensor
    values: torch.Tensor


def run_rounds(model, config, size: int, image_embed: torch.Tensor, high_res: list[torch.Tensor] | None,
               image_pe: torch.Tensor, targets: torch.Tensor, draws: Draws, use_box: bool,
               totals: tuple[torch.Tensor, int]) -> RoundsOutput:
    """The rounds of prompts with targets [P, S, S] bool, image embedding rows [P, C, h, w] and
    high-res feature rows; `totals`: (present targets, prompts) of the whole step."""
    device = targets.device
    if use_box:
        coords, labels = P.box_prompts(targets, uniform=draws.first)
    else:
        coords, labels = P.point_prompts(targets, uniform=draws.first)
    rows = torch.arange(targets.shape[0], device=device)
    mask_input = target_rows = loss_targets = None  # loss_targets [P, 1, h, w]: at the loss resolution
    rounds, losses, terms, ious = 1 + len(draws.clicks), [], [], []
    for r in range(rounds):
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
        out = model.mask_decoder(image_embeddings=image_embed, image_pe=image_pe,
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=(r == 0 and not use_box), repeat_image=False,
                                 high_res_features=high_res)
        low_res = out.masks.float()  # [P, M, s, s]
        if config.loss_resolution == "input":
            logits = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
            loss_targets = targets[:, None]
        else:
            logits = low_res
            if loss_targets is None:
                loss_targets = loss_targets_at(targets, low_res.shape[-1])
        round_terms = multimask_loss(logits, out.iou_pred, out.object_score_logits, loss_targets, config.loss,
                                     pixels_per_cell=(size / logits.shape[-1]) ** 2, totals=totals)
        losses.append(round_terms.total)
        terms.append(torch.stack([round_terms.total, round_terms.focal, round_terms.dice,
                                  round_terms.iou, round_terms.object_score]).detach())
        ious.append(round_terms.chosen_iou.sum().detach() / totals[1])
        if r + 1 < rounds:
            kept = out.iou_pred.argmax(dim=1)  # what a user of the predictor keeps
            kept_low = low_res[rows, kept][:, None].detach()
            mask_input = kept_low.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)
            # The click is drawn from the error of the mask at the input size, as a user of the
            # predictor sees it (logits upsampled as ImagePredictor does).
            if config.loss_resolution == "input":
                pred = logits[rows, kept].detach() > 0
            else:
                pred = F.interpolate(kept_low, size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0
            if target_rows is None:  # the targets' pixels per row, for every round's click
                target_rows = targets.sum(dim=2, dtype=torch.int32)
            xy, lab = P.corrective_clicks(targets, pred, target_row_counts=target_rows, uniform=draws.clicks[r])
            coords, labels = torch.cat([coords, xy], 1), torch.cat([labels, lab], 1)
    loss = torch.stack(losses).mean()
    values = torch.cat([torch.stack(terms).mean(0), ious[0][None], ious[-1][None]])
    values[0] = loss.detach()
    return RoundsOutput(loss, values)


def round_threads(device: torch.device, prompts: int) -> int:
    """How many threads the rounds of `prompts` prompts are split over: on CPU, up to torch's
    intra-op threads (at most MAX_ROUND_THREADS, at least MIN_PROMPTS_PER_THREAD prompts each);
    elsewhere 1 (a GPU runs each operation on all prompts at once)."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), MAX_ROUND_THREADS, prompts // MIN_PROMPTS_PER_THREAD))


def _in_threads(count: int, job: Callable[[int], object], context: Callable, grad: bool) -> list:
    """job(0..count-1), each on a thread of its own with 1/count of torch's intra-op threads,
    under `context()` and grad mode `grad` (both are per thread); the results in order. An
    exception in a job is raised here."""
    results: list = [None] * count
    failures: list[BaseException] = []
    intra_op = torch.get_num_threads()

    def work(i: int) -> None:
        try:
            torch.set_num_threads(max(1, intra_op // count))
            with torch.set_grad_enabled(grad), context():
                results[i] = job(i)
        except BaseException as error:  # re-raised in the calling thread
            failures.append(error)

    workers = [threading.Thread(target=work, args=(i,), name=f"segapp-train-{i}") for i in range(count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(intra_op)  # the workers' setting also reaches process-wide libraries
    if failures:
        raise failures[0]
    return results


def run_rounds_threaded(model, encode: Callable[[torch.Tensor], list[torch.Tensor]], images: torch.Tensor,
                        image_index: torch.Tensor, threads: int, context: Callable,
                        rounds: Callable[[list[torch.Tensor], torch.Tensor], RoundsOutput]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """A step on `threads` threads: `encode` (images -> per-image features) on consecutive parts
    of the images, `rounds(rows of the features, prompt index)` on consecutive parts of the
    prompts, then the encoder's backward on the image parts, each part on a thread of its own
    (under `context()`, e.g. autocast, and this thread's grad mode). Returns (loss, values) for
    all prompts: the loss is the parts' sum, with a gradient that gives each parameter the sum
    of the parts' gradients, in part order (a surrogate of value 0: sum(p * g) minus its value)."""
    grad = torch.is_grad_enabled()
    image_parts = torch.arange(len(images), device=images.device).tensor_split(min(threads, len(images)))
    encoded = _in_threads(len(image_parts), lambda i: encode(images[image_parts[i]]), context, grad)
    features = [torch.cat([part[k] for part in encoded]) for k in range(len(encoded[0]))]
    leaves = [f.detach().requires_grad_(grad and f.requires_grad) for f in features]
    params = [q for q in model.parameters() if q.requires_grad] if grad else []
    trained = [leaf for leaf in leaves if leaf.requires_grad]  # features the encoder is trained through
    prompt_parts = torch.arange(len(image_index), device=image_index.device).tensor_split(threads)

    def part_rounds(i: int):
        out = rounds([leaf[image_index[prompt_parts[i]]] for leaf in leaves], prompt_parts[i])
        grads = torch.autograd.grad(out.loss, params + trained, allow_unused=True) if params else ()
        return out, grads

    results = _in_threads(threads, part_rounds, context, grad)
    loss = sum(out.loss.detach() for out, _ in results)
    values = sum(out.values for out, _ in results)
    if not params:
        return loss, values
    gradients = [_add([grads[j] for _, grads in results]) for j in range(len(params) + len(trained))]
    if trained:  # the encoder's backward, image part by image part
        outputs = [(k, f) for k, (f, leaf) in enumerate(zip(features, leaves)) if leaf.requires_grad]

        def part_backward(i: int):
            rows = image_parts[i]
            own = [encoded[i][k] for k, _ in outputs]
            return torch.autograd.grad(own, params, [g[rows] for g in gradients[len(params):]], allow_unused=True)

        for grads in _in_threads(len(image_parts), part_backward, context, grad):
            gradients[:len(params)] = [_add([a, b]) for a, b in zip(gradients[:len(params)], grads)]
    surrogate = [(q * g).sum() for q, g in zip(params, gradients) if g is not None]
    return loss + sum(term - term.detach() for term in surrogate), values


def _add(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The sum of the tensors that are not None, in order (None if all are)."""
    present = [t for t in tensors if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total
