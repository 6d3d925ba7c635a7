"""2D axial rotary position encoding (RoPE) for attention over a grid of image tokens.

Each head's channels are read as D/2 consecutive pairs (2j, 2j+1), i.e. D/2 points in the
plane. The first D/4 pairs are turned by an angle proportional to the token's column x, the
last D/4 pairs by an angle proportional to its row y, pair j of either half turning with
frequency theta^(-4j/D).

Why that encodes *relative* position: rotating a query pair by a·f and a key pair by b·f
turns their dot product into q·R((b - a)·f)·k, because rotations compose and R(a)ᵀ = R(-a).
So after rotation every query-key logit depends on the tokens' offset (x_k - x_q, y_k - y_q),
never on where in the grid the pair sits; no absolute position is ever added to the tokens.

Memory attention reads keys from several past frames, each one the same h x w grid as the
queries, followed by a few object-pointer tokens. The frame keys get the query grid's angles
repeated once per frame (token (x, y) of any frame sits "at" (x, y)), so the rotation says
where in the image a memory token lies, while the frame's age comes from the temporal
encoding added to the memory beforehand. Object pointers have no place in the image and are
left unrotated.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

# Tables for a handful of grid sizes (one per image size / device in practice) are kept.
_TABLE_CACHE_SIZE = 16


def axial_angles(head_dim: int, height: int, width: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles of every token of an H x W grid, row-major (token t = y * W + x).

    Returns: [H * W, head_dim // 2] float32; column j < head_dim // 4 is x * f_j, column
    head_dim // 4 + j is y * f_j, with f_j = theta^(-4j / head_dim).
    """
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 4, dtype=torch.float32)[:quarter] / head_dim)
    token = torch.arange(height * width, dtype=torch.float32)
    x = token % width
    y = torch.div(token, width, rounding_mode="floor")
    return torch.cat((torch.outer(x, freqs), torch.outer(y, freqs)), dim=-1)


@functools.lru_cache(maxsize=_TABLE_CACHE_SIZE)
def _rotations(head_dim: int, theta: float, height: int, width: int, device: torch.device) -> torch.Tensor:
    """The rotations as unit complex numbers e^{i·angle}: [H * W, head_dim // 2] complex64."""
    # Built outside inference mode so that a table first made under torch.inference_mode()
    # can still be saved for backward by a later training step.
    with torch.inference_mode(False), torch.no_grad():
        angles = axial_angles(head_dim, height, width, theta)
        return torch.polar(torch.ones_like(angles), angles).to(device)


def rotate_pairs(x: torch.Tensor, rotations: torch.Tensor, complex_kernels: bool | None = None) -> torch.Tensor:
    """Turn each channel pair (2j, 2j+1) of x by the matching unit complex number.

    x: [..., C, N, D] where C >= 1 copies of an N-token grid may be folded into the token
    axis ([..., C * N, D]); rotations: [N, D/2] complex. Reading a pair (a, b) as a + ib, the
    turn is one complex product, computed in float32 and returned in x's dtype.
    complex_kernels: True, one complex multiply (torch's complex kernels); False, the same
    arithmetic written on real and imaginary parts, for devices without complex kernels;
    None (default): the complex kernels everywhere but on MPS.
    """
    n = rotations.shape[0]
    pairs = x.float().unflatten(-2, (-1, n)).unflatten(-1, (-1, 2))  # [..., C, N, D/2, 2]
    if complex_kernels is None:
        complex_kernels = x.device.type != "mps"
    if not complex_kernels:
        a, b = pairs[..., 0], pairs[..., 1]
        c, s = rotations.real, rotations.imag
        turned = torch.stack((a * c - b * s, a * s + b * c), dim=-1)
    else:
        turned = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * rotations)
    return turned.flatten(-2).flatten(-3, -2).to(x.dtype)


def square_grid(num_tokens: int) -> tuple[int, int]:
    """(side, side) for a square grid of num_tokens tokens; an error for any other count."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{num_tokens} tokens do not form a square grid; pass grid_hw=(height, width)"
        )
    return side, side


class AxialRoPE(nn.Module):
    """Applies 2D axial RoPE to the queries and keys of one attention layer.

    Holds no parameters or buffers: the cos/sin tables are computed on first use for the
    grid actually seen and cached per (head_dim, theta, height, width, device).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, repeat_k: bool = False) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.theta = float(theta)
        self.repeat_k = repeat_k

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, repeat_k={self.repeat_k}"

    def tables(self, height: int, width: int, device) -> torch.Tensor:
        """The rotations of an H x W grid as unit complex numbers: [H * W, head_dim // 2]."""
        return _rotations(self.head_dim, self.theta, int(height), int(width), torch.device(device))

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        grid_hw: tuple[int, int] | None = None,
        num_k_exclude: int = 0,
        overwrite_k: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate queries and keys by their grid positions.

        q: [B, heads, Nq, D], Nq = H * W tokens of the grid in row-major order.
        k: [B, heads, Nk, D]; the first Nk - num_k_exclude keys are rotated. Without
            `repeat_k` they must be exactly Nq (the same grid); with it, any whole number
            of copies of the grid (one per memory frame), zero included.
        grid_hw: (H, W); when omitted the grid is taken to be square.
        overwrite_k: with excluded keys, write the rotated keys into `k` itself instead of
            building a new tensor (saves copying the whole memory; for callers that own `k`).
        """
        num_q, num_k = q.shape[-2], k.shape[-2]
        height, width = square_grid(num_q) if grid_hw is None else grid_hw
        if height * width != num_q:
            raise ValueError(f"grid {height}x{width} does not match {num_q} query tokens")
        if not 0 <= num_k_exclude <= num_k:
            raise ValueError(f"cannot exclude {num_k_exclude} of {num_k} keys from RoPE")
        num_k_rope = num_k - num_k_exclude
        if self.repeat_k:
            if num_k_rope % num_q:
                raise ValueError(
                    f"{num_k_rope} rotated keys are not a whole number of {num_q}-token grids"
                )
        elif num_k_rope != num_q:
            raise ValueError(
                f"{num_k_rope} rotated keys but {num_q} queries; use repeat_k for memories"
            )

        rotations = self.tables(height, width, q.device)
        q = rotate_pairs(q, rotations)
        if num_k_rope == 0:
            return q, k
        # Every memory frame is a copy of the query grid: the same rotations broadcast over
        # the copies. Object-pointer keys at the end stay as they are.
        rotated = rotate_pairs(k[..., :num_k_rope, :], rotations)
        if not num_k_exclude:
            return q, rotated
        if not overwrite_k:
            return q, torch.cat((rotated, k[..., num_k_rope:, :]), dim=-2)
        k[..., :num_k_rope, :] = rotated
        return q, k
