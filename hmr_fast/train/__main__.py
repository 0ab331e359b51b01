"""`python -m hmr_fast.train` / `torchrun -m hmr_fast.train`: the same as `hmr-fast train`."""

import sys

from hmr_fast.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
