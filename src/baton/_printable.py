"""Control characters shown escaped: the one rule for user data written where a control
character would act instead of show (a terminal, a drawing's label)."""

from __future__ import annotations

import re

# C0 controls (newline, CR, tab and ESC included), DEL and the C1 controls (0x9b is a CSI).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(char: str) -> str:
    """One control character as text: `\\n`, `\\r`, `\\t` or `\\xNN`."""
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def printable(text: str) -> str:
    """`text` with every control character shown escaped (`\\x1b`, `\\n`, `\\r`, `\\t`, `\\x9b`),
    so data printed on a terminal can neither drive it (colours, title, cursor, clearing) nor
    break a one-line cell into lines that look like other rows."""
    return CONTROL.sub(lambda m: escape(m.group()), text)
