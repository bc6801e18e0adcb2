#!/usr/bin/env python
"""Send images to a TF Serving model exported by exportkit; print its top-k classes.

    python client/resnet_client.py cat.jpg dog.png --server localhost:8500
    python client/resnet_client.py https://example.com/cat.jpg --rest --server localhost:8501
    python client/resnet_client.py --help

The code is exportkit.client (importable as a library); this file is the
notebook's resnet_client.py entry point.
"""

import sys

from exportkit.client import main

if __name__ == "__main__":
    sys.exit(main())
