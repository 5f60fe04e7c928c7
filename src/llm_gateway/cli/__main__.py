"""``python -m llm_gateway.cli``: the same as ``llm-gateway``."""

import sys

from llm_gateway.cli import main

sys.exit(main())
