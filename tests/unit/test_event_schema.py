"""The identity event as it leaves the daemon, against daemon/event.schema.json (what
integrators validate with) and the example docs/operations.md gives: a field added to the
event, or to the schema, without the other fails here, not first in an integrator's parser."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

from daemon.events import SCHEMA_PATH, EventSinks, event_json
from daemon.tracks import Track, TrackEvent
from tests.conftest import REPO

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _track() -> Track:
    landmarks = np.array(
        [[838.2, 352.1], [876.9, 351.4], [858.0, 377.6], [842.3, 398.8], [873.5, 398.1]]
    )
    return Track(
        track_id=17,
        bbox_xyxy=np.array([812.44, 310.0, 901.7, 421.33]),
        landmarks=landmarks,
        first_seen=1000.0,
        last_seen=1001.2,
        first_seen_wall=1764361200.125,
        last_frame_wall=1764361201.327,
    )


# every kind of event, with what each carries (schema: "type" and "reason")
EVENTS = {
    "confirmed": TrackEvent("confirmed", _track(), None, 0.0, None),
    "confirmed as it leaves": TrackEvent("confirmed", _track(), None, 0.0, None, reason="lost"),
    "identified": TrackEvent("identified", _track(), "Ada", 0.8, 0.1123),
    "changed by the gallery": TrackEvent(
        "changed", _track(), None, 0.6, None, previous="Ada", reason="gallery"
    ),
    "left": TrackEvent("left", _track(), "Zoë", 1.0, 0.31, reason="cut"),
}


@pytest.mark.parametrize("name", list(EVENTS))
def test_every_kind_of_event_written_out_is_valid_against_the_schema(tmp_path, name) -> None:
    events = tmp_path / "events.jsonl"
    sinks = EventSinks(jsonl_file=str(events))
    sinks.emit(event_json(EVENTS[name], "garage-box", "front-door", 1764361201.327, None, 42))
    sinks.close()
    (line,) = events.read_text().splitlines()
    event = json.loads(line)
    jsonschema.validate(event, SCHEMA)  # every field it names, and only those
    assert event["seq"] == 42 and event["camera"] == "front-door" and event["track_id"] == 17
    assert event["bbox_xyxy"] == [812.4, 310.0, 901.7, 421.3]
    assert event["first_seen_ts"] == 1764361200.125


def test_an_event_without_a_field_or_with_one_more_is_refused_by_the_schema() -> None:
    """The schema is strict both ways, so the test above checks the fields, not only types."""
    event = event_json(EVENTS["identified"], "n", "c", 1764361201.327, "m", 1)
    event["published_ts"] = 1764361201.4
    jsonschema.validate(event, SCHEMA)
    with pytest.raises(jsonschema.ValidationError, match="track_age_s"):
        jsonschema.validate(dict(event, track_age_s=1.2), SCHEMA)
    with pytest.raises(jsonschema.ValidationError, match="'landmarks' is a required property"):
        jsonschema.validate({k: v for k, v in event.items() if k != "landmarks"}, SCHEMA)


def test_the_example_event_in_the_operations_guide_is_valid_against_the_schema() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    after = docs[docs.index("The event schema is `daemon/event.schema.json`") :]
    example = re.search(r"```json\n(.*?)```", after, re.DOTALL)
    assert example is not None, "the example after the schema's sentence is gone"
    jsonschema.validate(json.loads(example.group(1)), SCHEMA)
