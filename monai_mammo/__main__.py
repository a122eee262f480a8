import sys

from monai_mammo.cli import main

sys.exit(main())
