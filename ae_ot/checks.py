"""Input checks shared by the whole package, and the one exception type they raise.

Every check of a user's input (a config value, a command-line option, a tensor given to a public
function) raises :class:`UserInputError`, with a message that states the rule, the value received
and, where there is one, the fix. The ``ae-ot`` command line prints such errors as one line; any
other exception is a bug and keeps its traceback. ``UserInputError`` subclasses ``ValueError``, so
code that catches ``ValueError`` keeps working.

This module imports nothing but the standard library, so every layer (``ae_ot.ot`` included) can
use it.
"""

from __future__ import annotations

import math

__all__ = ["UserInputError", "MODEL_HINT", "require_positive", "require_positive_int", "require_int_at_least",
           "require_choice"]


class UserInputError(ValueError):
    """Bad input from the user: the message names the parameter, the rule, the value and the fix.

    Examples
    --------
    >>> try:
    ...     require_positive(lr=-1.0)
    ... except UserInputError as error:
    ...     print(type(error).__name__)
    UserInputError
    """


#: the ``hint`` of a model's hyper-parameter checks: how to set it with ``ae-ot fit``
MODEL_HINT = "; pass e.g. --model.init_args.{name}=<value>"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_positive(hint: str = "", **values) -> None:
    """Raise :class:`UserInputError` unless each keyword value is a finite number > 0.

    ``require_positive(lr=lr, clip=clip)``; ``hint`` is appended to the message, with ``{name}``
    replaced by the parameter's name (:data:`MODEL_HINT` says how to pass it on the command line).

    Examples
    --------
    >>> require_positive(lr=0.1, tol=1e-3)
    >>> try:
    ...     require_positive(lr=0.0)
    ... except UserInputError:
    ...     print("rejected")
    rejected
    """
    for name, value in values.items():
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            raise UserInputError(f"{name} must be a positive number, got {value!r}{hint.format(name=name)}")


def require_positive_int(hint: str = "", **values) -> None:
    """Raise :class:`UserInputError` unless each keyword value is an integer >= 1.

    Examples
    --------
    >>> require_positive_int(batch_size=64)
    >>> try:
    ...     require_positive_int(batch_size=0)
    ... except UserInputError:
    ...     print("rejected")
    rejected
    """
    require_int_at_least(1, hint, **values)


def require_int_at_least(minimum: int, hint: str = "", **values) -> None:
    """Raise :class:`UserInputError` unless each keyword value is an integer >= ``minimum``.

    Examples
    --------
    >>> require_int_at_least(0, seed=0)
    >>> try:
    ...     require_int_at_least(2, k=1)
    ... except UserInputError:
    ...     print("rejected")
    rejected
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise UserInputError(f"{name} must be {rule}, got {value!r}{hint.format(name=name)}")


def require_in_interval(low: float, high: float, hint: str = "", high_closed: bool = False, **values) -> None:
    """Raise :class:`UserInputError` unless each keyword value is a number in (low, high), or in
    (low, high] with ``high_closed``; ``hint`` as in :func:`require_positive`."""
    for name, value in values.items():
        if not (_is_number(value) and low < value and (value <= high if high_closed else value < high)):
            interval = f"({low:g}, {high:g}{']' if high_closed else ')'}"
            raise UserInputError(f"{name} must be in {interval}, got {value!r}{hint.format(name=name)}")


def require_choice(name: str, value, choices) -> None:
    """Raise :class:`UserInputError` unless ``value`` is one of ``choices``.

    Examples
    --------
    >>> require_choice("backend", "torch", ("auto", "torch", "keops"))
    >>> try:
    ...     require_choice("backend", "cuda", ("auto", "torch", "keops"))
    ... except UserInputError:
    ...     print("rejected")
    rejected
    """
    if value not in choices:
        raise UserInputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
