"""What `facewatch enroll` settles before it reads any photo, so that nothing found late
throws a long run away: each photo's SHA-256; the photos already enrolled for their person,
skipped (a rerun of a stopped or failed enroll goes on where it stopped); and the checks
that hold across the whole enroll: a name that only looks like another one (of this enroll
or enrolled) and one photo in two people's folders.
"""

from __future__ import annotations

import difflib
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from daemon.gallery_names import lookup_name, twin_key
from engines.base import file_sha256

SHOWN_AT_ONCE = 10  # a refusal lists this many problems, then how many more


class Refused(Exception):
    """The enroll is refused before any photo is read (exit status 1); the message says why
    and how to go on."""


@dataclass
class Person:
    """One person of an enroll and the photos of theirs it reads."""

    name: str
    photos: list[tuple[Path, str | None]] = field(default_factory=list)  # (photo, SHA-256)
    asked: int = 0  # photos given for them
    already: int = 0  # enrolled for them before, or given twice: not read again
    rejected: list[str] = field(default_factory=list)  # refused before reading (the reasons)


@dataclass
class Plan:
    people: list[Person]
    skipped: dict[str, str]  # name -> why its folder was left out (--skip-bad)


def plan(
    jobs: list[tuple[str, Path]],
    enrolled_names: list[str],
    holders: dict[str, set[str]],
    skip_bad: bool,
    show_progress: bool = False,
    folders: bool = True,
) -> Plan:
    """The people of ``jobs`` (name, photo) in order, each with the photos to read; Refused
    for names that only look like another and for a photo in two people's folders, unless
    ``skip_bad`` (then such a folder is left out, and such a photo refused in every folder
    it is in). ``holders``: who holds each photo enrolled (by SHA-256). ``folders``: the
    jobs come from --dir's folders; else from --name, whose name only looking like an
    enrolled one is refused even with ``skip_bad`` (there is nothing else to enroll), with
    the enrolled spelling to give instead."""
    twins = _twins(list(dict.fromkeys(name for name, _ in jobs)), enrolled_names)
    if twins and not folders:
        raise Refused(_name_twin(next(iter(twins)), enrolled_names))
    people: dict[str, Person] = {}
    seen: dict[str, dict[str, Path]] = {}  # SHA-256 -> name -> the first photo of it
    for name, path in tqdm(
        jobs, desc="hashing", unit="image", disable=not show_progress, file=sys.stderr
    ):
        person = people.setdefault(name, Person(name))
        person.asked += 1
        if name in twins:
            continue
        sha = _sha256(path)
        if sha is not None and (name in holders.get(sha, ()) or name in seen.get(sha, {})):
            person.already += 1
            continue
        if sha is not None:
            seen.setdefault(sha, {})[name] = path
        person.photos.append((path, sha))
    shared = _refuse_shared_photos(people, seen, holders)
    if (twins or shared) and not skip_bad:
        raise Refused(
            _listed([*dict.fromkeys(twins.values()), *shared])
            + "\n  nothing was read or enrolled: rename such a folder, keep each photo in the "
            "folder of the person it shows, or --skip-bad leaves them out"
        )
    return Plan([p for p in people.values() if p.name not in twins], twins)


def _sha256(path: Path) -> str | None:
    """The photo's SHA-256; None for what cannot be hashed (a folder, a file gone): reading
    it says what is wrong, as for any photo."""
    try:
        return None if path.is_dir() else file_sha256(path)
    except OSError:
        return None


def _twins(names: list[str], enrolled: list[str]) -> dict[str, str]:
    """name -> why, for each name that differs only in case, full-width or invisible
    characters from an enrolled one (that one is kept) or from another name of this enroll
    (both: which spelling is right cannot be told): each would be a person of its own, with
    part of one person's photos."""
    known = {lookup_name(name) for name in enrolled}
    folded = {twin_key(name): lookup_name(name) for name in enrolled}
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(twin_key(name), []).append(name)
    why = {}
    for key, group in groups.items():
        other = folded.get(key)
        for name in group:
            if other is not None and name not in known:
                why[name] = (
                    f"{other!r} is enrolled; {name!r} would be another person (names differ "
                    f"in case, full-width or invisible characters only): use {other!r}"
                )
            elif other is None and len(group) > 1:
                why[name] = (
                    f"{' and '.join(repr(n) for n in group)} differ in case, full-width or invisible characters "
                    "only: one person under two spellings, or two people that would be told "
                    "apart by case alone"
                )
    return why


def _name_twin(name: str, enrolled: list[str]) -> str:
    """--name NAME, enrolled under another spelling (case, full-width or invisible
    characters): who is enrolled, and the two ways on."""
    other = next(n for n in enrolled if twin_key(n) == twin_key(name))
    return (
        f"{other!r} is enrolled, and --name {name!r} differs from it only in case, full-width "
        "or invisible characters: it would be another person, looking like one (nothing was "
        f"read or enrolled). To add these photos to {other!r}, give --name "
        f"{shlex.quote(other)}, its enrolled spelling; for someone else, a name that differs "
        "in more than that (`facewatch gallery list` lists who is enrolled)"
    )


def _refuse_shared_photos(
    people: dict[str, Person],
    seen: dict[str, dict[str, Path]],
    holders: dict[str, set[str]],
) -> list[str]:
    """One photo, one person: a photo given for two people is refused in each of their
    folders, one enrolled as someone else for this one (a rejected photo, as one with no
    face); the photos given for two people (a line each), which refuse the enroll unless
    --skip-bad."""
    shared = []
    for sha, where in seen.items():
        others = holders.get(sha, set())
        if len(where) > 1:
            given = ", ".join(f"{p} ({n})" for n, p in where.items())
            shared.append(f"the same photo is given for {given}: one photo, one person")
        for name, path in where.items():
            if others - {name}:
                reason = f"{path}: the same photo is enrolled as {', '.join(sorted(others))}"
            elif len(where) > 1:
                twice = ", ".join(f"{p} ({n})" for n, p in where.items() if n != name)
                reason = f"{path}: the same photo is given for {twice} too: one photo, one person"
            else:
                continue
            person = people[name]
            person.rejected.append(reason)
            person.photos = [(p, s) for p, s in person.photos if s != sha]
    return shared


def _listed(problems: Iterable[str]) -> str:
    """The first SHOWN_AT_ONCE problems, one a line, then how many more."""
    problems = list(problems)
    shown = problems[:SHOWN_AT_ONCE]
    more = len(problems) - len(shown)
    return "\n  ".join([f"{len(problems)} problem(s) before any photo is read:", *shown]) + (
        f"\n  and {more} more" if more else ""
    )


def close_names(new: list[str], enrolled: list[str]) -> dict[str, str]:
    """new name -> the enrolled name it may be a typo of: the same letters and digits (case,
    spaces, hyphens and other marks aside), else a near spelling (``difflib``) of the same
    first letter, so that thousands of names against thousands stay quick."""
    by_key: dict[str, str] = {}
    by_first: dict[str, list[str]] = {}
    for name in enrolled:
        key = _letters(name)
        by_key.setdefault(key, name)
        by_first.setdefault(key[:1], []).append(key)
    close = {}
    for name in new:
        key = _letters(name)
        if key in by_key:
            close[name] = by_key[key]
            continue
        near = difflib.get_close_matches(key, by_first.get(key[:1], []), n=1, cutoff=0.85)
        if near:
            close[name] = by_key[near[0]]
    return close


def _letters(name: str) -> str:
    return "".join(c for c in twin_key(name) if c.isalnum())
