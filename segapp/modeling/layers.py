"""Small building blocks shared by several parts of the model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def activation_layer(name: str) -> nn.Module:
    """Instantiate an activation from its config name ("relu" or "gelu")."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None


class MLP(nn.Module):
    """A stack of `num_layers` linear layers with an activation between them.

    Parameters are stored as `layers.{i}` to keep the official checkpoint layout.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: str = "relu",
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation_layer(activation)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a [B, C, H, W] map (per pixel)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Moving channels last lets the fused layer_norm kernel do the work; it computes the
        # same biased-variance normalisation as the explicit mean/var formulation.
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


# Channels-last forms of the decoder's and prompt encoder's small convolutions, for training:
# a 2x2 stride-2 convolution (or transposed convolution) reads (writes) disjoint 2x2 patches,
# so it is one matrix product per pixel on [B, H, W, C] maps, with the module's own parameters.
# The same arithmetic as the convolution, in another order (equal up to float rounding); on CPU
# these matrix products and their backward take far less time than the convolution kernels on
# a few channels, and the maps stay in the token layout ([B, h*w, C]) of the transformer.
def _check_patch_conv(conv: nn.Module) -> None:
    if conv.kernel_size != (2, 2) or conv.stride != (2, 2) or conv.padding != (0, 0) or conv.groups != 1 \
            or conv.dilation != (1, 1):
        raise ValueError(f"not a 2x2 stride-2 convolution: {conv}")


def conv2x2_planes(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv` (2x2, stride 2) on x [B, Cin, H, W] -> [B, Cout, H/2, W/2], on channel planes: for
    a few channels (a mask, click maps) one small matrix times the 4 * Cin sub-sampled planes."""
    _check_patch_conv(conv)
    b, c, h, w = x.shape
    planes = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, -1)
    weight = conv.weight.reshape(1, conv.out_channels, 4 * c).expand(b, -1, -1)  # [B, out, (in, dy, dx)]
    bias = conv.bias.reshape(1, -1, 1) if conv.bias is not None else x.new_zeros(1, conv.out_channels, 1)
    return torch.baddbmm(bias, weight, planes).reshape(b, conv.out_channels, h // 2, w // 2)


def conv2x2_to_nhwc(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv` (2x2, stride 2) on x [B, Cin, H, W] -> [B, H/2, W/2, Cout], channels last."""
    _check_patch_conv(conv)
    b, c, h, w = x.shape
    patches = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h // 2, w // 2, 4 * c)
    return F.linear(patches, conv.weight.reshape(conv.out_channels, 4 * c), conv.bias)  # [out, (in, dy, dx)]


def conv_transpose2x2_nhwc(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """`conv` (transposed, 2x2, stride 2) on x [B, H, W, Cin] -> [B, 2H, 2W, Cout], channels last."""
    _check_patch_conv(conv)
    cin, cout = conv.weight.shape[:2]
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * cout, cin)  # [(dy, dx, out), in]
    bias = None if conv.bias is None else conv.bias.repeat(4)
    y = F.linear(x, weight, bias)
    b, h, w, _ = y.shape
    return y.reshape(b, h, w, 2, 2, cout).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, cout)


def conv1x1_nhwc(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution on x [B, H, W, Cin] -> [B, H, W, Cout]."""
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
        raise ValueError(f"not a 1x1 convolution: {conv}")
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def layer_norm_nhwc(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """`norm` (LayerNorm2d, over channels) on x [B, H, W, C]."""
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def layer_norm_planes(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """`norm` on x [B, C, H, W] as elementwise passes over the channel planes (the same
    normalisation: biased variance): for a few channels, much faster than the fused kernel,
    whose per-pixel rows of C values are too short to vectorise."""
    centred = x - x.mean(dim=1, keepdim=True)
    scale = torch.rsqrt(centred.square().mean(dim=1, keepdim=True) + norm.eps)
    return centred * scale * norm.weight.reshape(1, -1, 1, 1) + norm.bias.reshape(1, -1, 1, 1)
