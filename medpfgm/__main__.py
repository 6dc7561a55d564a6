"""`python -m medpfgm …` and `torchrun … -m medpfgm -- …`: the same command as `medpfgm …`."""

import sys

from medpfgm.cli import main

sys.exit(main())
