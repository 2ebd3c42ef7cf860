"""``python -m baselines.dqn``: reference rewards of a candidate-level env (:mod:`baselines.dqn.references`)."""

import sys

from baselines.dqn.references import main

sys.exit(main())
