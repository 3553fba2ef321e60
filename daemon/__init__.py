"""facewatch's streaming service and command line. Imports engines, never training.

(Not python-daemon: this package lives in the facewatch repository.)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# One BLAS thread, set before anything imports numpy: matching a face against the gallery
# needs no more (0.4 ms a batch at 1,000 people, 2.6 at 10,000), and OpenBLAS's workers
# busy-wait after each product of a gallery of 2,500 faces or more: with 1,000 people the
# daemon took 58 ms of CPU a frame instead of 33, on the core the detector needed
# (bench/README.md, "BLAS threads"). A value set in the environment is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"


@functools.cache  # the code that runs: a git pull after the start does not change it
def build_version() -> str:
    """``__version__``, with the git commit of the checkout it runs from (``0.1.0+g1a2b3c4``;
    a wheel has none): after a `git pull` and a restart, ``facewatch --version``,
    ``facewatch_build_info`` and Home Assistant's device say which code runs. The commit is
    read from the checkout's files, without git."""
    commit = _checkout_commit(Path(__file__).resolve().parent.parent / ".git")
    return f"{__version__}+g{commit[:7]}" if commit else __version__


def _checkout_commit(git: Path) -> str | None:
    """The commit HEAD names in the git folder ``git`` (a worktree's ``.git`` file leads to
    its own), None where there is none or it cannot be read."""
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: PATH" (relative to its folder)
            git = git.parent / git.read_text().partition("gitdir:")[2].strip()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if _is_commit(head) else None
        ref = head.partition("ref:")[2].strip()
        common = git / "commondir"  # a worktree's refs are the main checkout's
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        loose = base / ref
        if loose.is_file():
            found = loose.read_text().strip()
            return found if _is_commit(found) else None
        for line in (base / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _is_commit(sha):
                return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _is_commit(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
