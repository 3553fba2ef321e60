"""`facewatch status` (daemon.status_cli): the problems it names."""

from __future__ import annotations


def test_status_names_a_broker_that_refuses_the_nodes_messages() -> None:
    """Connected, but the broker's ACL refuses what the spool offers (facewatch_mqtt_refused
    1): `facewatch status` says so, where it said only 'MQTT connected' with a rising spool."""
    from daemon.status_cli import Status

    fields = dict(url="u", version="v", backend="b", model="m", uptime_s=1.0, enrolled=0)
    refusing = Status(mqtt="connected", spooled=7, refused=True, **fields)  # type: ignore[arg-type]
    assert refusing.problems() == [
        "the MQTT broker refuses this node's messages (7 message(s) spooled): its ACL (the "
        "daemon's log names the topic)"
    ]
    assert Status(mqtt="connected", spooled=0, refused=False, **fields).problems() == []  # type: ignore[arg-type]


def test_status_names_a_face_archive_the_disk_refuses() -> None:
    """The archive's folder read-only (or full) while the daemon runs: one ERROR a minute in
    the log, and `facewatch status` said nothing of it (the spool's problems it names)."""
    from daemon.status_cli import Status

    fields = dict(url="u", version="v", backend="b", model="m", uptime_s=1.0, enrolled=0)
    failing = Status(
        mqtt="off", spooled=0, refused=False, archive_failing=True, archive_errors=9, **fields
    )  # type: ignore[arg-type]
    assert failing.problems() == [
        "the face archive cannot write to archive.dir (9 failure(s) since the start; the "
        "daemon's log says why: a read-only or full disk?)"
    ]
    assert Status(mqtt="off", spooled=0, refused=False, archive_errors=9, **fields).problems() == []  # type: ignore[arg-type]
