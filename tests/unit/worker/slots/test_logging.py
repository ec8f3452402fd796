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


def test_the_slot_parent_logs_to_stderr_in_lines_that_name_its_node(capsys):
    from distpool.worker.slots import parent

    logger = logging.getLogger("distpool")
    handler = parent.log_to_stderr("distpool-7@host", "info")
    try:
        logger.info("slot %d started", 3)
        logger.debug("not at INFO")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "INFO/distpool-7@host] slot 3 started" in err and "not at INFO" not in err


def test_a_forked_slot_drops_the_parent_s_handler_before_celery_configures_its_own(capsys):
    from distpool.worker.slots import child, parent

    logger = logging.getLogger("distpool")
    before = list(logger.handlers)
    parent.log_to_stderr("distpool-7@host", "WARNING")
    child.drop_parent_logging()  # what run_slot does first
    assert logger.handlers == before and logger.level == logging.NOTSET
    logger.warning("once, through the slot's own handlers")
    assert capsys.readouterr().err == ""


def test_a_bad_loglevel_is_refused_before_any_slot_starts(capsys):
    import pytest

    from distpool.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["worker", "--loglevel", "loud", "--insecure"])
    assert exited.value.code == 2 and "not a log level: 'loud'" in capsys.readouterr().err
