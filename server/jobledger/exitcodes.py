"""Exit codes scripts can rely on, shared by every `jobledger` command."""

EXIT_OK = 0
#: An error: HTTP error from the server, port in use, worker id taken, Docker absent...
EXIT_ERROR = 1
#: Bad command-line usage (argparse's own code).
EXIT_USAGE = 2
#: The database is unreachable or failing.
EXIT_DATABASE = 3


class Exit(Exception):
    """Ends a command with `code`, `message` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
