"""NHS numbers: ten digits whose last is a Modulus 11 check digit.

We lean on the `nhs-number` package for the check itself; this module only fixes the shape the
rest of the board expects (digits only, no spaces) so callers never have to guess.
"""

from __future__ import annotations

import nhs_number


def is_valid(number: str) -> bool:
    """True for exactly ten digits passing the Modulus 11 check (no spaces, no dashes)."""
    # isascii: str.isdigit also accepts other scripts' digits (Arabic-Indic, fullwidth...).
    return len(number) == 10 and number.isascii() and number.isdigit() and bool(nhs_number.is_valid(number))


def format_334(number: str) -> str:
    """The 3-3-4 grouping shown on screens: ``943 476 5919``."""
    return f"{number[:3]} {number[3:6]} {number[6:]}"
