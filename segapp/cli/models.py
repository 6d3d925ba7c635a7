"""Which model a command runs: the rule `segapp demo`, `segapp segment` and `segapp eval coco`
share.

- `--checkpoint PATH`: that file (with `--model`, or the config the file names: a segapp
  `.safetensors` records it, an official file name gives it, else `sam2.1_hiera_t`).
- neither `--model` nor `--checkpoint`: the default official checkpoint (`sam2.1_hiera_t`) if
  `segapp download` put it where segapp looks (./checkpoints, $SEGAPP_CHECKPOINTS), else the
  bundled small model `segapp_small`.
- `--model segapp_small`: the bundled weights.
- `--model test_tiny`: random weights (tests and development only).
- `--model` an official name (`sam2.1_hiera_l`, `tiny`, ...): its downloaded checkpoint, or an
  error saying how to download it. Any other `--model` needs `--checkpoint`.

`download_or_bundled` is `segapp demo --download NAME`: the official checkpoint (downloaded when
missing), or, when it cannot be had, the bundled model and a one-line notice saying why.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segapp.cli import EXIT_USAGE, CLIError

# Test configs that run without a checkpoint, on random weights.
RANDOM_WEIGHTS_MODELS = ("test_tiny",)


def bundled_fallback() -> str:
    """The sentence every "no checkpoint" message ends with: what runs without one."""
    from segapp import bundled

    return (f"with neither --model nor --checkpoint, `segapp demo`, `segment` and `eval coco` run "
            f"the bundled small model {bundled.NAME} (`segapp demo` alone starts it)")


@dataclass(frozen=True)
class ModelChoice:
    """config: the config to build; checkpoint: the weights (None: random, test configs only);
    bundled: the weights are the bundled segapp_small; description: one line for people."""

    config: str
    checkpoint: Path | None
    bundled: bool
    description: str

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    @property
    def line(self) -> str:
        """The line each command prints before it runs."""
        return f"model: {self.description}"


def _official(config: str, checkpoint: Path) -> ModelChoice:
    return ModelChoice(config, checkpoint, False, f"{config} (checkpoint {checkpoint})")


def _bundled() -> ModelChoice:
    from segapp import bundled

    try:
        path = bundled.checkpoint()
    except bundled.BundledModelMissing as err:
        raise CLIError(str(err), EXIT_USAGE) from None
    return ModelChoice(bundled.NAME, path, True, bundled.description())


def _config_of_checkpoint(checkpoint: Path) -> str:
    """The config a checkpoint file was made for, as far as the file tells."""
    from segapp import bundled, registry
    from segapp.build import resolve_config

    name = bundled.read_metadata(checkpoint).get("config")
    if name:
        try:
            resolve_config(name)
            return name
        except (ValueError, FileNotFoundError):
            pass
    info = registry.by_filename(checkpoint.name)
    return info.config if info is not None else registry.DEFAULT_CHECKPOINT


def official_config(model: str) -> str:
    """The config for a model name: registry aliases such as 'tiny' become the config name."""
    from segapp import registry

    try:
        return registry.get(model).config
    except registry.UnknownCheckpointError:
        return model


def choose_model(model: str | None, checkpoint: Path | None) -> ModelChoice:
    """Apply the rule of this module's docstring; CLIError (exit 2) saying what to do otherwise."""
    from segapp import bundled, registry
    from segapp.build import is_bundled_config

    if checkpoint is not None:
        if not checkpoint.is_file():
            raise CLIError(f"checkpoint not found: {checkpoint}; {bundled_fallback()}", EXIT_USAGE)
        config = official_config(model) if model is not None else _config_of_checkpoint(checkpoint)
        if bundled.is_bundled(checkpoint):
            return ModelChoice(config, checkpoint, True, bundled.description())
        return _official(config, checkpoint)
    if model is None:
        found = registry.find_local(registry.DEFAULT_CHECKPOINT)
        if found is not None:
            return _official(registry.DEFAULT_CHECKPOINT, found)
        return _bundled()
    if is_bundled_config(model):
        return _bundled()
    if Path(model).stem in RANDOM_WEIGHTS_MODELS:
        return ModelChoice(model, None, False,
                           f"{model} (random weights: for tests and development, masks are meaningless)")
    try:
        info = registry.get(model)
    except registry.UnknownCheckpointError:
        raise CLIError(
            f"no checkpoint for model {model!r}: pass --checkpoint PATH, or leave out --model to "
            f"run the bundled {bundled.NAME} (or `--model {RANDOM_WEIGHTS_MODELS[0]}`, random weights "
            "for tests)", EXIT_USAGE) from None
    found = registry.find_local(info.config)
    if found is None:
        dirs = ", ".join(str(d) for d in registry.default_search_dirs())
        raise CLIError(
            f"no checkpoint for {info.config} found (looked in: {dirs}). Get it with:\n"
            f"    segapp download {info.config}\n"
            f"or pass --checkpoint PATH; {bundled_fallback()}", EXIT_USAGE)
    return _official(info.config, found)


def download_or_bundled(name: str, dest: Path | None = None, *, timeout: float = 30,
                        progress: bool = True) -> tuple[ModelChoice, str | None]:
    """(the model to run, a notice or None) for `segapp demo --download NAME`.

    The official checkpoint `name` if segapp finds it (./checkpoints, $SEGAPP_CHECKPOINTS), else
    downloaded into `dest` (default ./checkpoints; resumable and verified, see segapp.download).
    When the download fails (network, server, checksum, disk), the bundled model instead, with
    a one-line notice saying why and how to get full quality. An unknown name is a CLIError
    (exit 2): a typo is not a network problem.
    """
    from segapp import bundled, registry
    from segapp.download import DownloadError, download

    try:
        info = registry.get(name)
    except registry.UnknownCheckpointError:
        raise CLIError(f"--download: unknown checkpoint name {name!r}; valid names: "
                       f"{', '.join(registry.names())}", EXIT_USAGE) from None
    found = registry.find_local(info.config)
    if found is not None:
        return _official(info.config, found), None
    dest = registry.DEFAULT_DIR if dest is None else dest
    try:
        path = download(info.config, dest, progress=progress, timeout=timeout)
    except (DownloadError, OSError) as err:
        text = str(err).strip()
        reason = text.splitlines()[0].rstrip(".") if text else type(err).__name__
        notice = (f"could not download {info.config} ({reason}); running the bundled {bundled.NAME} "
                  f"instead (a small model). For full quality run "
                  f"`segapp download {info.config}` once the network allows, then `segapp demo`.")
        return _bundled(), notice
    return _official(info.config, path), None
