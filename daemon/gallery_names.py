"""Person names: how the gallery stores, finds and compares them.

A name is stored in Unicode NFC, without spaces or invisible format characters at its ends,
each run of spaces inside one plain space (``lookup_name``; every command finds a person by
any spelling that comes to the same). Two names that only look alike (case, full-width
letters, invisible characters: ``twin_key``) are never two people, and the words the outputs
use themselves are no one's name (``clean_name``).
"""

from __future__ import annotations

import unicodedata

from daemon.gallery_file import GalleryError

MAX_NAME_CHARS = 100
# what the outputs say themselves: identify, events and metrics for a face nobody matches,
# metrics for everyone when identities are hidden, Home Assistant's people sensor for no one
# and for faces nobody matches
RESERVED_NAMES = ("unknown", "known", "nobody", "stranger")
# refused inside a name: bidi embeddings, overrides and isolates reorder what follows them on
# a terminal, line and paragraph separators break a line, BOM and zero-width space are unseen
HIDING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
HIDING |= frozenset("\u2028\u2029\ufeff\u200b")
JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ: some scripts and emoji sequences need them
_TAGS = frozenset(map(chr, range(0xE0000, 0xE0080)))  # the tail of a flag emoji (Cf too)


def lookup_name(name: str) -> str:
    """A name as the gallery looks it up: Unicode NFC (the same letters typed on any system,
    or taken from a folder name on macOS, are one name), without spaces or invisible format
    characters at the ends, and each run of spaces inside (a no-break space pasted from a web
    page, a doubled or full-width space) one plain space."""
    return " ".join(_ends_trimmed(unicodedata.normalize("NFC", name)).split())


def twin_key(name: str) -> str:
    """A name as two names are compared (twins, reserved names): ``lookup_name`` in
    compatibility form (NFKC: full-width 'Ａｄａ' is 'Ada'), casefolded, without invisible
    format characters other than the joiners. Names with one key look like one person."""
    text = unicodedata.normalize("NFKC", lookup_name(name))
    text = unicodedata.normalize("NFKC", text.casefold())
    return " ".join("".join(c for c in text if not _invisible(c)).split())


def clean_name(name: str) -> str:
    """A new person's name as stored (``lookup_name``); GalleryError for an empty, over-long
    or reserved name, one with control characters (line breaks, tabs, terminal escapes)
    or, inside it, characters that hide or reorder text (bidi controls, line separators, BOM,
    zero-width space), or one that is not valid UTF-8 (bytes of another encoding in a folder
    name or an argument: the gallery could not store it)."""
    text = _ends_trimmed(unicodedata.normalize("NFC", name))
    if any(unicodedata.category(c) == "Cs" for c in text):
        shown = "".join("\ufffd" if unicodedata.category(c) == "Cs" else c for c in text)
        raise GalleryError(
            f"name {shown!r} is not valid UTF-8: written in another encoding, such as Latin-1 "
            "(the bytes shown as \ufffd)"
        )
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise GalleryError(
            f"name {text!r}: control characters (line breaks, tabs, escapes) are not allowed"
        )
    if any(c in HIDING for c in text):
        raise GalleryError(
            f"name {text!r}: invisible or text-reordering characters (bidi controls, line "
            "separators, BOM, zero-width space) are not allowed"
        )
    text = lookup_name(text)
    if not text:
        raise GalleryError("a person needs a non-empty name")
    if len(text) > MAX_NAME_CHARS:
        raise GalleryError(f"name {text[:20]!r}...: longer than {MAX_NAME_CHARS} characters")
    if twin_key(text) in RESERVED_NAMES:
        raise GalleryError(
            f"name {text!r} is reserved: facewatch's outputs say {twin_key(text)!r} themselves "
            f"(reserved: {', '.join(RESERVED_NAMES)})"
        )
    return text


def _ends_trimmed(text: str) -> str:
    """``text`` without spaces and format characters at its ends (a BOM or a zero-width
    space copied along with a name); tag characters stay, they end a flag emoji."""
    start, end = 0, len(text)
    while start < end and _blank_end(text[start]):
        start += 1
    while end > start and _blank_end(text[end - 1]):
        end -= 1
    return text[start:end]


def _blank_end(char: str) -> bool:
    return char.isspace() or (unicodedata.category(char) == "Cf" and char not in _TAGS)


def _invisible(char: str) -> bool:
    """A format character that changes nothing a reader sees in a name (joiners do)."""
    return unicodedata.category(char) == "Cf" and char not in JOINERS
