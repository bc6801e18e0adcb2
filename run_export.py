"""Export a checkpoint as a TF Serving SavedModel version, configured by Hydra.

    python run_export.py checkpoint.path=/data/resnet_model model.size=50 head.k=5
    python run_export.py -m head.k=1,5 preprocessing=notebook,vgg checkpoint.path=...
    python run_export.py --help

The same app as the installed ``exportkit`` command (exportkit/app.py).
"""

from exportkit.app import main

if __name__ == "__main__":
    main()
