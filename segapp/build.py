"""Build models from Hydra configs: by name (`sam2.1_hiera_t`) or by path to a YAML file.

Hydra's global state is never left initialised: each composition runs inside
`initialize_config_dir`, which restores whatever state was there before (none, or a
caller's own Hydra app).
"""
from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

logger = logging.getLogger(__name__)


def config_dir() -> Path:
    """The folder of segapp's bundled configs (the repository's `configs/`)."""
    return Path(str(importlib.resources.files("segapp.configs")))


def list_configs() -> list[str]:
    """Names of the bundled model configs (`base/` holds shared parts, not models)."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config name or a path to a YAML file -> the YAML file to compose."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate.resolve()
    name = str(name_or_path)
    bundled = config_dir() / f"{name.removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return bundled
    if candidate.suffix in (".yaml", ".yml"):
        raise FileNotFoundError(f"config file not found: {candidate}")
    raise ValueError(f"unknown config {name!r}; bundled configs: {', '.join(list_configs())}; "
                     "or pass the path of a YAML file")


def compose_config(name_or_path: str | Path, overrides: Sequence[str] = ()):
    """Compose a config (with its defaults list) into a resolved OmegaConf object.

    The bundled configs folder stays on the search path, so a user's YAML file can extend
    `base/sam2.1` in its defaults list.
    """
    from omegaconf import OmegaConf

    path = resolve_config(name_or_path)
    overrides = list(overrides)
    if path.parent != config_dir():
        overrides.append(f"hydra.searchpath=[file://{config_dir()}]")
    cfg = _compose_isolated(path, overrides)
    cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg.pop("hydra", None)
    logger.info("config %s from %s", name_or_path, path)
    return OmegaConf.create(cfg)


def _compose_isolated(path: Path, overrides: list[str]):
    """Compose `path` with a Hydra instance of our own, leaving any caller's Hydra untouched.

    A caller may have initialised Hydra's global singleton (its own app, or a library at
    import); it is set aside, and put back afterwards, exactly as it was.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    saved = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
            return compose(config_name=path.stem, overrides=overrides)
    finally:
        restore_gh_from_backup(saved)


def default_device() -> torch.device:
    """CUDA when present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_bundled_config(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` is the config of segapp's bundled model (`segapp_small`)."""
    from segapp import bundled

    try:
        return resolve_config(name_or_path) == config_dir() / f"{bundled.NAME}.yaml"
    except (ValueError, FileNotFoundError):
        return False


def build_model(
    name_or_path: str | Path = "segapp_small",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    image_size: int | None = None,
    overrides: Sequence[str] = (),
    bf16: bool = False,
    random_init: bool = False,
    seed: int | None = None,
):
    """Build a SAM 2 model in eval mode.

    Returns the `nn.Module` (as the official `build_sam2`); what the build knows about it (its
    config, a label, the parts with trained weights, the compute dtype, predictor presets such
    as box zoom from the config's `predictor:` section) is recorded beside it as a
    `segapp.ModelInfo`: read it with `segapp.model_info(model)` (see segapp.build_info).

    `build_model()` alone gives segapp's bundled small model (`segapp_small` with the weights
    shipped in the package, see `segapp.bundled`).

    Args:
      name_or_path: a bundled config name (see `list_configs()`) or a YAML path; default
        `segapp_small`.
      checkpoint: an official `.pt` ({"model": state_dict}) or a segapp `.safetensors`,
        loaded strictly. None: for `segapp_small`, the bundled weights; for any other config
        the weights stay random (a warning says so).
      random_init: keep the random initial weights even for `segapp_small` (training from
        scratch); no checkpoint may be given with it.
      device: "cpu", "cuda", "mps", ...; default: the best available.
      image_size: model input side in pixels (a multiple of 32; default from the config,
        1024 for the official ones). Everything derived from it follows.
      overrides: extra Hydra overrides, e.g. ["model.tracking.num_maskmem=5"].
      bf16: run the predictors' computations in bfloat16 autocast (weights stay fp32).
      seed: draw the initial (random) weights from a generator seeded with this, so that every
        process building the same config gets the same model; the global RNG is left as it was.
        None: from the global RNG. Weights loaded from a checkpoint replace them either way.
    """
    from hydra.utils import instantiate

    from segapp import bundled
    from segapp.checkpoint import load_checkpoint
    from segapp.build_info import ModelInfo, set_model_info

    if random_init and checkpoint is not None:
        raise ValueError("random_init=True builds random weights: give no checkpoint with it")
    overrides = list(overrides)
    if image_size is not None:
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        overrides.append(f"image_size={int(image_size)}")
    from hydra.errors import InstantiationException

    cfg = compose_config(name_or_path, overrides)
    if "box_zoom" in cfg.model:
        raise ValueError(f"config {name_or_path}: box_zoom is a predictor preset now: move it from "
                         "`model:` to a top-level `predictor:` section (predictor: {box_zoom: 3.0})")
    presets = ModelInfo.presets(cfg.get("predictor"), str(name_or_path))
    try:
        if seed is None:
            model = instantiate(cfg.model, _convert_="all")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = instantiate(cfg.model, _convert_="all")
    except InstantiationException as err:
        # Hydra wraps the part's own error; the user needs that message, about their config.
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise ValueError(f"config {name_or_path}: {cause}") from err
        raise
    label = str(name_or_path)
    metadata: dict[str, str] = {}
    if checkpoint is None and not random_init and is_bundled_config(name_or_path):
        checkpoint = bundled.checkpoint()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        metadata = bundled.read_metadata(checkpoint)
        if bundled.is_bundled(checkpoint):
            label = f"{bundled.NAME} (bundled)"
            logger.info("model: %s", bundled.description(metadata))
        else:
            label = f"{name_or_path} ({Path(checkpoint).name})"
    elif random_init:
        logger.info("%s: random initial weights (training from scratch)", name_or_path)
    else:
        logger.warning("no checkpoint given: %s has random weights", name_or_path)
    model = model.to(torch.device(device) if device is not None else default_device()).eval()
    # What the weights are, for the predictors and the CLI: a label for messages, and the
    # parts that carry trained weights (None: all of them; see segapp.bundled.trained_parts).
    set_model_info(model, ModelInfo(name=str(name_or_path), label=label,
                                    trained_parts=bundled.trained_parts(metadata),
                                    compute_dtype=torch.bfloat16 if bf16 else torch.float32, **presets))
    return model


def describe(cfg: Any) -> str:
    """The composed config as YAML, for logs and `segapp info`."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg)
