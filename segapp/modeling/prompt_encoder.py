"""Prompt encoder: points, boxes and low-resolution masks to decoder embeddings."""
from __future__ import annotations

import torch
from torch import nn

from segapp.modeling.layers import LayerNorm2d, activation_layer
from segapp.modeling.position_encoding import RandomFourierEncoding

# Point labels understood by the prompt encoder.
LABEL_PAD, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


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
    """

    def __init__(
        self,
        embed_dim: int,
        image_size: int,
        backbone_stride: int = 16,
        mask_in_chans: int = 16,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
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
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation_layer(activation),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation_layer(activation),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: torch.Tensor | None = None
        self._dense_pe_key: tuple | None = None

    def get_dense_pe(self) -> torch.Tensor:
        """[1, C, h, w] encoding of the image embedding's grid (same frequencies as points).

        It depends only on the frequency matrix, so it is computed once and reused for every
        click; the cache key notices a moved or reloaded matrix.
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = (matrix.device, matrix.data_ptr(), matrix._version)
        if self._dense_pe_key != key or self.training:
            with torch.no_grad():
                self._dense_pe = self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)
            self._dense_pe_key = key
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
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense
