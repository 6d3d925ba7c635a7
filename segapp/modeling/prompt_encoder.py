"""Prompt encoder: points, boxes and low-resolution masks to decoder embeddings."""
from __future__ import annotations

import torch
from torch import nn

from segapp.modeling.layers import (LayerNorm2d, activation_layer, conv1x1_nhwc, conv2x2_planes,
                                    conv2x2_to_nhwc, layer_norm_nhwc, layer_norm_planes)
from segapp.modeling.position_encoding import RandomFourierEncoding

# Point labels understood by the prompt encoder.
LABEL_PAD, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3
# Logit written inside (+) and outside (-) a box drawn as a dense prompt (box_mask_prompt).
BOX_MASK_LOGIT = 8.0
# Channels of the click map (click_map_prompt): positive clicks, negative clicks.
CLICK_MAP_CHANNELS = 2


def downscaler(in_chans: int, mask_in_chans: int, embed_dim: int, activation: str) -> nn.Sequential:
    """[B, in_chans, 4h, 4w] -> [B, embed_dim, h, w]: two stride-2 convs (to mask_in_chans / 4,
    then mask_in_chans channels), each with a LayerNorm2d and the activation, then a 1x1 conv.
    The layout of the official `mask_downscaling` (checkpoint keys `.0`, `.1`, `.3`, `.4`, `.6`)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, mask_in_chans // 4, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans // 4),
        activation_layer(activation),
        nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans),
        activation_layer(activation),
        nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
    )


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Sparse: each point becomes the random-Fourier encoding of its pixel centre plus a
    learned embedding of its label (negative, positive, box top-left, box bottom-right);
    padding points (label -1) become the learned "not a point" embedding. Boxes are two
    labelled corners.
    Dense: a [B, 1, 4h, 4w] mask of logits is convolved down to [B, C, h, w]; without a
    mask, the learned "no mask" embedding is broadcast.

    Args:
      embed_dim: C, the decoder width.
      image_size: side of the square model input, in pixels.
      backbone_stride: stride of the image embedding (16), so h = w = image_size / stride.
      mask_in_chans: hidden width of the mask downscaler.
      box_mask_prompt: also give a box as a dense prompt, when no mask is given: the box is
        drawn at the mask-input resolution (+BOX_MASK_LOGIT on every cell it overlaps,
        -BOX_MASK_LOGIT elsewhere) and goes through the mask downscaler. Off in the official
        SAM 2 models; segapp_small, trained from scratch on a few hundred images, uses it so that
        "inside the box" is an input rather than something to learn from corner encodings.
      click_map_sigma: when > 0, clicks are also given as a dense prompt (off, 0, in the official
        models): positive and negative clicks are drawn as Gaussian bumps of this standard
        deviation (model-input pixels) in two channels at the mask-input resolution, and a
        downscaler of their own turns them into a [B, C, h, w] map that is added to the dense
        embedding (no-mask, mask or box). A click is then a feature *at* its place in the image
        embedding, not only a token that the decoder must learn to locate through the positional
        encodings: what a small model trained on a few hundred images can use (as RITM's click
        maps). The downscaler's last layer starts at zero, so adding it to trained weights
        changes nothing until it is trained.
      matmul_convs: fast path in training mode: the downscalers run as matrix products, their
        first stage on channel planes and the rest channels last (`downscale`; same parameters,
        the same result up to float rounding, a fraction of the CPU time of the convolution and
        LayerNorm kernels on these few channels, backward included), and the dense embedding
        comes out channels last (a [B, C, h, w] view of [B, h, w, C]), the token layout of the
        decoder's transformer. In eval mode, and with False, the plain convolutions.
    """

    def __init__(
        self,
        embed_dim: int,
        image_size: int,
        backbone_stride: int = 16,
        mask_in_chans: int = 16,
        activation: str = "gelu",
        box_mask_prompt: bool = False,
        click_map_sigma: float = 0.0,
        matmul_convs: bool = True,
    ) -> None:
        super().__init__()
        self.matmul_convs = matmul_convs
        self.box_mask_prompt = box_mask_prompt
        if click_map_sigma < 0:
            raise ValueError(f"click_map_sigma must be >= 0 (0 turns click maps off), got {click_map_sigma}")
        self.click_map_sigma = float(click_map_sigma)
        if image_size % backbone_stride:
            raise ValueError(f"image_size {image_size} is not a multiple of the stride {backbone_stride}")
        self.embed_dim = embed_dim
        self.input_image_size = (image_size, image_size)
        side = image_size // backbone_stride
        self.image_embedding_size = (side, side)
        self.mask_input_size = (4 * side, 4 * side)
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = downscaler(1, mask_in_chans, embed_dim, activation)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        if self.click_map_sigma > 0:
            self.click_downscaling = downscaler(CLICK_MAP_CHANNELS, mask_in_chans, embed_dim, activation)
            nn.init.zeros_(self.click_downscaling[-1].weight)
            nn.init.zeros_(self.click_downscaling[-1].bias)
        self._dense_pe: torch.Tensor | None = None
        self._dense_pe_key: torch.Tensor | None = None

    def get_dense_pe(self) -> torch.Tensor:
        """[1, C, h, w] encoding of the image embedding's grid (same frequencies as points).

        It depends only on the frequency matrix, so it is computed once and reused for every
        click; a copy of the (small) matrix is kept to notice a moved or reloaded one. (Not its
        version counter: a model built under torch.inference_mode has none.)
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = self._dense_pe_key
        stale = (key is None or key.device != matrix.device or key.dtype != matrix.dtype
                 or not torch.equal(key, matrix))
        if stale or self.training:
            with torch.no_grad():
                self._dense_pe = self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)
            self._dense_pe_key = matrix.detach().clone()
        return self._dense_pe

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points: [B, N, 2] xy in model-input pixels; labels: [B, N] int -> [B, N(+1), C]."""
        points = points + 0.5  # pixel centre
        if pad:
            # A padding point tells the decoder "no box follows" (as in training).
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), LABEL_PAD)], dim=1)
        encoding = self.pe_layer.encode_pixels(points, self.input_image_size)
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)  # [4, C]
        labelled = encoding + table[labels.clamp(min=0).long()]
        return torch.where((labels == LABEL_PAD).unsqueeze(-1), self.not_a_point_embed.weight, labelled)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes: [B, 4] xyxy in model-input pixels -> [B, 2, C]."""
        corners = boxes.reshape(-1, 2, 2)
        labels = corners.new_tensor([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], dtype=torch.long)
        return self.embed_points(corners, labels.expand(corners.shape[0], 2), pad=False)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse [B, N, C] and dense [B, C, h, w] embeddings."""
        batch = (
            points[0].shape[0] if points is not None
            else boxes.shape[0] if boxes is not None
            else masks.shape[0] if masks is not None
            else 1
        )
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        fast = self.training and self.matmul_convs
        if masks is not None:
            dense = self.downscale(self.mask_downscaling, masks, fast)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
            if self.box_mask_prompt and (points is not None or boxes is not None):
                drawn, has_box = self.draw_boxes(points, boxes)
                if bool(has_box.any()):
                    dense = torch.where(has_box.reshape(-1, 1, 1, 1), self.downscale(self.mask_downscaling, drawn, fast),
                                        dense)
        if self.click_map_sigma > 0 and points is not None:
            dense = dense + self.downscale(self.click_downscaling, self.draw_clicks(*points), fast)
        return torch.cat(sparse, dim=1), dense

    @staticmethod
    def downscale(downscaling: nn.Sequential, maps: torch.Tensor, fast: bool) -> torch.Tensor:
        """maps [B, Cin, 4h, 4w] through a downscaler -> [B, C, h, w]. fast (see matmul_convs): as
        matrix products, the first stage on channel planes (its LayerNorm over C/4 channels as
        elementwise passes), the rest channels last; the result is channels last."""
        if not fast:
            return downscaling(maps)
        conv1, norm1, act1, conv2, norm2, act2, conv3 = downscaling
        x = act1(layer_norm_planes(conv2x2_planes(maps, conv1), norm1))
        x = act2(layer_norm_nhwc(conv2x2_to_nhwc(x, conv2), norm2))
        return conv1x1_nhwc(x, conv3).permute(0, 3, 1, 2)

    def draw_clicks(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Clicks as a [B, 2, 4h, 4w] map: channel 0 positive, 1 negative clicks.

        coords: [B, N, 2] xy in model-input pixels; labels: [B, N] (box corners and padding
        are not clicks and are left out). Each cell holds the largest Gaussian bump
        exp(-d^2 / 2 sigma^2) over the clicks of its channel, d measured between pixel centres.
        """
        side = self.mask_input_size[0]
        dtype = self.no_mask_embed.weight.dtype
        if coords.shape[1] == 0:
            return coords.new_zeros(coords.shape[0], CLICK_MAP_CHANNELS, side, side, dtype=dtype)
        cell = self.input_image_size[0] / side
        centres = (torch.arange(side, device=coords.device, dtype=torch.float32) + 0.5) * cell
        xy = coords.float() + 0.5
        dx2 = (centres.view(1, 1, side) - xy[..., 0:1]).square()  # [B, N, side]
        dy2 = (centres.view(1, 1, side) - xy[..., 1:2]).square()
        # The bump is separable, exp(-(dy^2 + dx^2) / 2s^2) = exp(-dy^2 / 2s^2) exp(-dx^2 / 2s^2):
        # 2 x side exponentials per click and an outer product rather than side^2 exponentials
        # (the exponentials were ~15% of a training step's CPU time with 8 prompt rounds).
        scale = -1.0 / (2 * self.click_map_sigma ** 2)
        bumps = torch.exp(dy2 * scale).unsqueeze(-1) * torch.exp(dx2 * scale).unsqueeze(-2)  # [B, N, side, side]
        maps = [torch.where((labels == label).view(*labels.shape, 1, 1), bumps, 0.0).amax(dim=1)
                for label in (LABEL_POSITIVE, LABEL_NEGATIVE)]
        return torch.stack(maps, dim=1).to(dtype)

    def draw_boxes(
        self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt's box as a [B, 1, 4h, 4w] mask of +-BOX_MASK_LOGIT, and [B] whether it has one.

        The box is `boxes` when given, else the first top-left and bottom-right corners among
        the points. A cell is inside when it overlaps the box, so a box smaller than a cell
        still marks one.
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2).float()
            has_box = torch.ones(corners.shape[0], dtype=torch.bool, device=corners.device)
        else:
            coords, labels = points
            top_left, bottom_right = labels == LABEL_BOX_TOP_LEFT, labels == LABEL_BOX_BOTTOM_RIGHT
            has_box = top_left.any(dim=1) & bottom_right.any(dim=1)
            rows = torch.arange(coords.shape[0], device=coords.device)
            corners = torch.stack([coords[rows, top_left.int().argmax(dim=1)],
                                   coords[rows, bottom_right.int().argmax(dim=1)]], dim=1).float()
        side = self.mask_input_size[0]
        cell = self.input_image_size[0] / side
        starts = torch.arange(side, device=corners.device, dtype=torch.float32) * cell

        def overlap(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:  # [B] -> [B, side]
            return (starts + cell > low[:, None]) & (starts < high[:, None])

        inside = overlap(corners[:, 0, 1], corners[:, 1, 1])[:, :, None] & overlap(
            corners[:, 0, 0], corners[:, 1, 0])[:, None, :]
        drawn = torch.where(inside, BOX_MASK_LOGIT, -BOX_MASK_LOGIT).unsqueeze(1)
        return drawn.to(self.no_mask_embed.weight.dtype), has_box
