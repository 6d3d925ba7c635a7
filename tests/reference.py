"""Access to the reference implementation (sam2==1.1.0) for parity tests.

The reference needs torchvision, for which no build exists for this torch. The stand-in
in ../shared/tools/torchvision_shim is put on sys.path here and only here, after segapp
has been imported, so segapp itself can never come to depend on it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import segapp  # noqa: F401  (imported before the shim goes on sys.path)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGAPP_SHARED", REPO.parent / "shared"))
SHIM = SHARED / "tools" / "torchvision_shim"
DATA = SHARED / "data"

# segapp config name -> the reference's config path
REFERENCE_CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}


class ReferenceMissing(RuntimeError):
    pass


def import_reference():
    """Import and return the reference `sam2` package (with the torchvision stand-in)."""
    if str(SHIM) not in sys.path:
        if not SHIM.is_dir():
            raise ReferenceMissing(f"torchvision stand-in not found at {SHIM}")
        sys.path.append(str(SHIM))
    try:
        import sam2
        import sam2.build_sam  # noqa: F401
    except ImportError as err:  # pragma: no cover - set-up problem
        raise ReferenceMissing(
            f"the reference sam2==1.1.0 is not installed ({err}); run tests/setup_reference.sh"
        ) from err
    return sam2


def build_reference_model(name: str, image_size: int = 1024, video: bool = False, checkpoint=None):
    """The reference SAM2Base (or SAM2VideoPredictor) for one of the official configs, on CPU."""
    import_reference()
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    builder = build_sam2_video_predictor if video else build_sam2
    return builder(REFERENCE_CONFIGS[name], ckpt_path=checkpoint, device="cpu",
                   hydra_overrides_extra=overrides)


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter and buffer in the state dict random values, zero-initialised ones too.

    Matrices get N(0, 1/fan_in) so activations keep their scale through deep stacks;
    vectors (biases, norm scales, embeddings initialised to zero) get their value plus N(0, 0.1²).
    """
    gen = torch.Generator().manual_seed(seed)
    for _, tensor in sorted(module.state_dict(keep_vars=True).items()):
        if not tensor.is_floating_point():
            continue
        if tensor.dim() >= 2:
            fan_in = tensor[0].numel() if tensor.dim() > 2 or tensor.shape[0] > 1 else tensor.shape[-1]
            tensor.copy_(torch.randn(tensor.shape, generator=gen) / max(fan_in, 1) ** 0.5)
        else:
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen))


def make_official_checkpoint(name: str, path: Path, seed: int = 0) -> Path:
    """Write an official-format checkpoint ({"model": state_dict}) of config `name` with random values.

    The reference initialises some tensors from the global RNG before `randomize_` adds its own
    noise; seeding it here (without disturbing the caller's RNG) makes the file the same in
    every session.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_reference_model(name)
    randomize_(model, seed)
    torch.save({"model": model.state_dict()}, path)
    return path
