"""The client is silent unless the application configures logging."""

from __future__ import annotations

import logging
import subprocess
import sys


def test_the_distpool_logger_has_a_null_handler():
    import distpool  # noqa: F401

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("distpool").handlers)


def test_warnings_do_not_reach_stderr_without_logging_configured():
    code = ("import logging, distpool\n"
            "logging.getLogger('distpool').warning('should stay quiet')\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0 and completed.stderr == ""
