"""The Hydra app: ``exportkit ...`` (the installed command) and ``python run_export.py ...``.

    exportkit checkpoint.path=/data/resnet_model model.size=50 head.k=5
    exportkit -m head.k=1,5 preprocessing=notebook,vgg checkpoint.path=...
    exportkit --help

The configuration is the package ``exportkit.conf`` (the repository's ``conf/``), so the
command composes the same config from any directory. Nothing heavy is imported at
module level: ``main`` first makes SIGTERM during start-up exit cleanly.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


def _interrupted_early(signum: int, frame: object) -> None:
    """SIGTERM before run_job installs its own handler: nothing exists yet to clean up."""
    print("error: interrupted: no version was published", file=sys.stderr)
    sys.exit(130)


def _job(cfg: Any) -> object:
    """One export; the launchers import this by name in their workers (joblib, Ray, SLURM)."""
    from .cli import run_job

    return run_job(cfg)


def refuse_unknown_options(args: list[str]) -> None:
    """GROUP=OPTION naming no option (model=resnt) or a base_* schema: one line with the
    option meant, exit 1, before Hydra composes (its own error lists but never suggests)."""
    from .config import config_dir, group_choice_error
    from .console import Reporter

    message = group_choice_error(args, str(config_dir()))
    if message:
        Reporter().refused(message)
        sys.exit(1)


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupted_early)  # first, so a kill during the imports exits cleanly too
    import hydra

    from .config import register_configs
    from .plugin import load_plugins

    load_plugins()
    register_configs()
    refuse_unknown_options(sys.argv[1:])
    hydra.main(version_base="1.3", config_path="conf", config_name="config")(_job)()


if __name__ == "__main__":
    main()
