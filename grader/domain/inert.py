"""Student-provided text made inert before it reaches a terminal or a spreadsheet.

Ids, names, messages and log excerpts come from submissions. Printed raw, an escape sequence in
one can move the cursor, rewrite earlier lines, set the window title or hide text; a CSV cell
starting with `=` is run as a formula by spreadsheet programs.
"""

from __future__ import annotations

import re
import unicodedata

# ESC-introduced sequences as terminals parse them: CSI (ESC [ ... final byte), OSC/DCS/PM/APC
# strings up to their terminator (BEL or ESC \), and two-byte escapes (ESC followed by one).
# Their 8-bit C1 forms (0x9b CSI, 0x9d OSC, ...) are matched as well.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]P^_X]|[\x9d\x90\x9e\x9f\x98])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)
# Characters that reorder the text shown around them (bidirectional overrides and isolates).
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def terminal_safe(text: str, keep_newlines: bool = False) -> str:
    """`text` with escape sequences removed and every other control character shown as `?`.

    Tabs become spaces; newlines are kept only with `keep_newlines` (otherwise they become
    spaces, so a one-line field stays one line).
    """
    text = _SEQUENCE.sub("", text)
    kept = []
    for char in text:
        if char == "\n" and keep_newlines:
            kept.append(char)
        elif char in "\t\n":
            kept.append(" ")
        elif char in _BIDI or unicodedata.category(char) == "Cc":
            kept.append("?")
        else:
            kept.append(char)
    return "".join(kept)


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell that spreadsheet programs show as text: one starting with a formula character
    gets a leading single quote, as OWASP's advice on CSV injection recommends."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell
