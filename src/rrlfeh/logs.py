"""What every entry point (the rrlfeh CLI, the Spark job) prints: its own progress at INFO,
other libraries' records from WARNING up, and no third-party chatter switched on by default."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# third-party notes off unless the user asks for them (their own variables win)
QUIET_ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TF_CPP_MIN_LOG_LEVEL": "3",             # TF C++ notes (oneDNN, tf.data attrs)
    "GX_ANALYTICS_ENABLED": "false",         # no usage reports from Great Expectations
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow logs through its own handler, past the filter, in every process (the tune and
    # K-fold workers print "Creating initial MLflow database tables" otherwise)
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def own_info_only(record: logging.LogRecord) -> bool:
    """Log filter: rrlfeh's records at any level, other libraries' from WARNING up."""
    return record.levelno >= logging.WARNING or record.name.startswith("rrlfeh")


def configure_logging() -> None:
    """Set QUIET_ENVIRONMENT (where unset) and log rrlfeh's INFO and others' warnings, one line
    a record, to stderr; call first thing in an entry point, before the libraries load."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    for handler in logging.getLogger().handlers:  # libraries set their own levels on import
        handler.addFilter(own_info_only)
