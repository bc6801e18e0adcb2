"""Export a checkpoint as a TF Serving SavedModel version, configured by Hydra.

    python run_export.py checkpoint.path=/data/resnet_model model.size=50 head.k=5
    python run_export.py -m head.k=1,5 preprocessing=notebook,vgg checkpoint.path=...
    python run_export.py --help
"""

import signal
import sys


def _interrupted_early(signum: int, frame: object) -> None:
    """SIGTERM before run_job installs its own handler: nothing exists yet to clean up."""
    print("error: interrupted: no version was published", file=sys.stderr)
    sys.exit(130)


signal.signal(signal.SIGTERM, _interrupted_early)  # first, so a kill during the imports exits cleanly too

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from exportkit.cli import run_job  # noqa: E402
from exportkit.config import register_configs  # noqa: E402
from exportkit.plugin import load_plugins  # noqa: E402

# The built-in model plugins; third-party ones come in through the
# "exportkit.models" entry point group.
BUILTIN_PLUGINS = ("models.resnet", "models.cifar_resnet")

load_plugins(BUILTIN_PLUGINS)
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    return run_job(cfg, plugins=BUILTIN_PLUGINS)


def refuse_unknown_options(args: list[str]) -> None:
    """GROUP=OPTION naming no option (model=resnt) or a base_* schema: one line with the
    option meant, exit 1, before Hydra composes (its own error lists but never suggests)."""
    from pathlib import Path

    from exportkit.config import group_choice_error
    from exportkit.console import Reporter

    message = group_choice_error(args, str(Path(__file__).resolve().parent / "conf"))
    if message:
        reporter = Reporter()
        reporter.error(message)
        reporter.console.print("[dim]no version was published[/]")
        sys.exit(1)


if __name__ == "__main__":
    refuse_unknown_options(sys.argv[1:])
    main()
