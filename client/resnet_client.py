#!/usr/bin/env python
"""Send images to a TF Serving model exported by exportkit; print its top-k classes.

    python client/resnet_client.py cat.jpg dog.png --server localhost:8500
    python client/resnet_client.py https://example.com/cat.jpg --rest --server localhost:8501
    python client/resnet_client.py cat.jpg dog.png --key a,b        # AI Platform keys, echoed back
    python client/resnet_client.py cat.jpg --classify               # the Classify API
    python client/resnet_client.py cat.jpg --version 3              # or --version-label stable
    python client/resnet_client.py --help

The client asks the server for the signature (GetModelMetadata) and sends what it
takes: any signature preset of docs/signatures.md works without options
(--no-metadata: the seed notebook's predict_images/images). The code is
exportkit.client (importable as a library); this file is the notebook's
resnet_client.py entry point.
"""

import sys

from exportkit.client import main

if __name__ == "__main__":
    sys.exit(main())
