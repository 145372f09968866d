#!/usr/bin/env python
"""Turn a photo into the folder the coarse stage reads (a thin wrapper over single_image_nerf.preprocess.cli).

    python data_scripts/preprocess_image.py demo/coffee.jpg --output data/coffee
    python data_scripts/preprocess_image.py front.jpg back.jpg --azimuths 0 180 --output data/shoe
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from single_image_nerf.preprocess.cli import main
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from single_image_nerf.preprocess.cli import main
    sys.exit(main())
