"""Argument checks shared by the whole package. Each returns the value as
a plain Python value or raises a `TypeError` / `ValueError` that names the
argument and the value received, as Keras's own messages do:
"`temperature` must be a finite number > 0. Received: temperature=0"."""

import math
import numbers


def check_positive(value, name, alternative=""):
    """`value` as a Python float; a `TypeError` / `ValueError` naming `name`
    unless it is a finite real number > 0 (numpy scalars are fine).
    `alternative` completes the type message, e.g. `" or None"`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number{alternative}. Received: {name}={value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value}")
    return float(value)


def check_int(value, name, minimum, allow_none=False):
    """`value` as a Python int >= `minimum` (numpy integers are fine), or a
    `ValueError` naming `name` and the value received."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be {'None or ' if allow_none else ''}an integer "
                         f">= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_choice(value, name, choices):
    """`value` unless it is not one of `choices`: a `ValueError` naming them."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def check_views(owner, views, expected=2):
    """A `ValueError` unless `views` is `expected` (methods built on pairs of
    views need 2); `owner` names the class in the message."""
    if views != expected:
        raise ValueError(f"{owner} needs `views={expected}`. Received: views={views!r}")
    return views
