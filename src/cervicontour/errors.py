"""Exceptions the CLI turns into exit code 2 ("the input cannot be used")."""


class InputError(ValueError):
    """Bad input: the message says what was expected, what arrived, and what to do."""
