from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# As the segapp command does (segapp/cli/__init__.py): idle OpenMP threads sleep instead of
# spinning, which on a shared CPU made torch many times slower. Read when torch is first
# imported, which is below (reference imports it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import reference  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)


@pytest.fixture(scope="session")
def ref():
    """The reference sam2 package; fails (does not skip) when it is not set up."""
    try:
        return reference.import_reference()
    except reference.ReferenceMissing as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory, ref):
    """Factory: path of a random official-format checkpoint for a config name (cached per session)."""
    cache = {}
    root = tmp_path_factory.mktemp("official_ckpts")

    def get(name: str, seed: int = 0):
        key = (name, seed)
        if key not in cache:
            cache[key] = reference.make_official_checkpoint(name, root / f"{name}-{seed}.pt", seed)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def shared_data():
    if not reference.DATA.is_dir():
        pytest.fail(f"shared data folder not found at {reference.DATA}")
    return reference.DATA
