"""One exception type for every user-facing failure: scripts print its message as one line and exit 2."""


class PipelineError(Exception):
    """A clear, one-line error about bad input (a file, a config key, a corrupt artifact)."""


class DataError(PipelineError):
    """A dataset file is missing, truncated, corrupt, malicious or of the wrong shape/dtype."""


class ConfigError(PipelineError):
    """A configuration key is unknown, has the wrong type or is out of range."""
