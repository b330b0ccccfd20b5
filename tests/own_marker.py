"""A factory whose module writes a marker file when imported (the trust test)."""

import os
from pathlib import Path

Path(os.environ.get("LANDSCAPE_MARKER", "/nonexistent/marker")).write_text("code ran")

from own_model import build  # noqa: E402,F401
