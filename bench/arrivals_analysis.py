"""bench_arrivals.py's reading of a run: from the RTSP server's marks (when he appeared and
left) and the messages a subscriber received (when, on which topic, what), each visit's
waits, their summary, what was received in short, and the printed table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

PERSON = "lin-manuel-miranda"  # the clip's person, one of configs/demo/people
CAMERA = "door"

# (time, topic, payload) of a message received: the payload parsed when JSON, else None
Message = tuple[float, str, Any]


def _first(
    messages: list[tuple[float, str, Any]], start: float, end: float, test: Any
) -> float | None:
    for when, topic, payload in messages:
        if start <= when < end and isinstance(payload, dict) and test(topic, payload):
            return round(when - start, 3)
    return None


def _event(topic: str) -> bool:
    return topic.endswith(f"/events/{CAMERA}")


def _answer_test(stranger: bool) -> Callable[[str, dict[str, Any]], bool]:
    """Whether a message is his naming, or (``stranger``) his announcement as unknown."""
    wanted = None if stranger else PERSON

    def answer(topic: str, p: dict[str, Any]) -> bool:  # his naming, or his announcement as unknown
        return (
            _event(topic)
            and p["type"] in ("confirmed", "identified")
            and p["identity"] == wanted
            and p.get("reason") is None  # (not a glimpse announced as it left)
        )

    return answer


def _events(messages: list[Message], start: float, end: float) -> list[dict[str, Any]]:
    """The camera's events received from ``start`` until ``end``."""
    return [
        p for t, topic, p in messages if start <= t < end and isinstance(p, dict) and _event(topic)
    ]


def visit_waits(
    messages: list[Message], appear: float, leave: float, following: float, stranger: bool
) -> dict[str, Any]:
    """One visit's waits: appear -> first event, -> named (or announced unknown), leave ->
    his track's ``left`` and -> faces 0 (each before ``following``, the next appear); the
    tracks announced for him, those split by a scene cut, and the false strangers."""
    answer = _answer_test(stranger)
    announced = [
        p["track_id"]
        for t, topic, p in messages
        if appear <= t < leave and isinstance(p, dict) and answer(topic, p)
    ]
    false_unknown = [
        p["track_id"]
        for p in _events(messages, appear, following)
        if p["type"] == "confirmed" and p["identity"] is None
    ]
    return {
        "first_event_s": _first(messages, appear, leave, lambda t, p: _event(t)),
        ("unknown_s" if stranger else "named_s"): _first(messages, appear, leave, answer),
        "left_s": _first(
            messages,
            leave,
            following,
            lambda t, p, ids=announced: _event(t) and p["type"] == "left" and p["track_id"] in ids,
        ),
        "faces_0_s": _first(
            messages,
            leave,
            following,
            lambda t, p: t.endswith(f"/cameras/{CAMERA}/faces") and p["faces"] == 0,
        ),
        "tracks_announced": len(set(announced)),
        "split_by_cut": sum(
            1
            for p in _events(messages, appear, leave)
            if p["type"] == "left" and p.get("reason") == "cut"
        ),
        **({} if stranger else {"false_unknown": len(set(false_unknown))}),
    }


def summarise(visits: list[dict[str, Any]], stranger: bool) -> dict[str, Any]:
    """Each wait's median and worst over the visits, and how many visits it never came in."""
    summary: dict[str, Any] = {"visits": len(visits)}
    for key in ("first_event_s", "unknown_s" if stranger else "named_s", "left_s", "faces_0_s"):
        values = [v[key] for v in visits if v[key] is not None]
        summary[key] = {
            "median": round(statistics.median(values), 2) if values else None,
            "worst": round(max(values), 2) if values else None,
            "missing": len(visits) - len(values),
        }
    if not stranger:
        summary["false_unknown"] = sum(v["false_unknown"] for v in visits)
    summary["split_by_cut"] = sum(v["split_by_cut"] > 0 for v in visits)
    return summary


def analyse(
    marks: list[tuple[str, int, float]],
    messages: list[tuple[float, str, Any]],
    stranger: bool,
    ended: float,
) -> dict[str, Any]:
    """Each visit's waits from ``marks`` (kind, loop, time) and the ``messages`` received
    (time, topic, payload): appear -> first event, -> named (``stranger``: -> announced
    unknown), leave -> his track's ``left`` and -> faces 0. A visit counts when its leave
    mark came; a wait is None when it never came before the next appear (or ``ended``)."""
    appears = sorted(when for kind, _, when in marks if kind == "appear")
    leaves = sorted(when for kind, _, when in marks if kind == "leave")
    visits = []
    for k, appear in enumerate(appears):
        leave = next((t for t in leaves if t > appear), None)
        if leave is None:
            break
        following = appears[k + 1] if k + 1 < len(appears) else ended
        visits.append(visit_waits(messages, appear, leave, following, stranger))
    return {"summary": summarise(visits, stranger), "per_visit": visits}


def received(messages: list[tuple[float, str, Any]]) -> list[list[Any]]:
    """What analyse() read, to analyse again: [time, topic's last two levels, the event's
    type, track, identity and reason, or the faces state's count]."""
    kept = []
    for when, topic, payload in messages:
        if not isinstance(payload, dict):
            continue
        where = "/".join(topic.split("/")[-2:])
        if topic.endswith(f"/events/{CAMERA}"):
            fields = [payload[k] for k in ("type", "track_id", "identity", "reason")]
            kept.append([round(when, 3), where, *fields])
        elif topic.endswith(f"/cameras/{CAMERA}/faces"):
            kept.append([round(when, 3), where, payload["faces"]])
    return kept


def table(result: dict[str, Any]) -> str:
    summary, stranger = result["summary"], result["stranger"]
    answer = "unknown_s" if stranger else "named_s"
    head = "appear->unknown" if stranger else "appear->named"
    lines = [
        f"{result['config']}{' ' + ' '.join(result['set']) if result['set'] else ''}, "
        f"{'a stranger' if stranger else 'a known person'}, {summary['visits']} visits "
        "(seconds, median / worst)",
        f"{'appear->first event':>20} {head:>16} {'leave->left':>12} {'leave->faces 0':>15}",
        "  ".join(
            f"{summary[k]['median']!s:>7} / {summary[k]['worst']!s:<6}"
            + (f" ({summary[k]['missing']} never)" if summary[k]["missing"] else "")
            for k in ("first_event_s", answer, "left_s", "faces_0_s")
        ),
    ]
    if not stranger:
        lines.append(f"false unknowns announced during his visits: {summary['false_unknown']}")
    lines.append(f"visits split by a scene cut: {summary['split_by_cut']}")
    machine = result["machine"]
    lines.append(
        f"machine: {machine['cores']} cores, 1-minute load average {machine['load_1min_before']}"
        f" before, {machine['load_1min_after']} after; other processes used "
        f"{machine['others_cores']} cores on average; CPU s of the parts: {machine['cpu_s']}"
    )
    return "\n".join(lines)
