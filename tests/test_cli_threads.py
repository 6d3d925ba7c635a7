"""The `segapp` command sets OpenMP's wait policy to PASSIVE unless the user chose one: with
spinning idle threads (OpenMP's default) a shared CPU runs segapp many times slower."""
from __future__ import annotations

import os
import subprocess
import sys


def policy_after_main(env_policy: str | None, import_torch_first: bool = False) -> str:
    """OMP_WAIT_POLICY as segapp's main() leaves it in a fresh Python process."""
    code = ("import os, sys\n"
            + ("import torch\n" if import_torch_first else "")
            + "from segapp.cli import main\n"
            + "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            + "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_segapp_command_defaults_to_passive_waiting():
    assert policy_after_main(None) == "PASSIVE"


def test_a_policy_the_user_set_is_kept():
    assert policy_after_main("ACTIVE") == "ACTIVE"


def test_nothing_is_pretended_once_torch_is_loaded():
    # OpenMP read the environment when torch was imported: setting it later would change nothing.
    assert policy_after_main(None, import_torch_first=True) == "unset"
