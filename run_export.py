"""Export a checkpoint as a TF Serving SavedModel version, configured by Hydra.

    python run_export.py checkpoint.path=/data/resnet_model model.size=50 head.k=5
    python run_export.py -m head.k=1,5 preprocessing=notebook,vgg checkpoint.path=...
    python run_export.py --help
"""

import hydra
from omegaconf import DictConfig

from exportkit.cli import run_job
from exportkit.config import register_configs
from exportkit.plugin import load_plugins

# The built-in model plugins; third-party ones come in through the
# "exportkit.models" entry point group.
BUILTIN_PLUGINS = ("models.resnet", "models.cifar_resnet")

load_plugins(BUILTIN_PLUGINS)
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    return run_job(cfg, plugins=BUILTIN_PLUGINS)


if __name__ == "__main__":
    main()
