"""Bad input from the user: printed by the CLI as one line, exit status 2.

Raised wherever the input is judged (a selection, a stored run, a claim file), so each module
says what is wrong in its own words and the command line stays the only place that prints.
"""


class UsageError(Exception):
    """Bad input or unusable data; the message is one line."""
