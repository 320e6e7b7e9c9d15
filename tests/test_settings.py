"""Settings: invalid values are reported and replaced by defaults; the README table is generated."""

from __future__ import annotations

from pathlib import Path

from canvas_ls.server.settings import ServerSettings, parse_settings, settings_schema, settings_table


def test_invalid_values_are_reported_and_defaulted_valid_ones_apply():
    s, problems = parse_settings(
        {"maxSteps": "many", "acceptance": "vibes", "seed": 7, "nope": 1, "singleLineSlots": [8, 16]}
    )
    assert s.maxSteps == ServerSettings.maxSteps and s.acceptance == "entropy"
    assert s.seed == 7 and s.singleLineSlots == (8, 16)
    text = " ".join(problems)
    assert "maxSteps" in text and "acceptance" in text and "unknown setting 'nope'" in text


def test_nested_canvas_key_and_non_object():
    s, problems = parse_settings({"canvas": {"maxSteps": 4}})
    assert s.maxSteps == 4 and not problems
    s, problems = parse_settings(["not", "an", "object"])
    assert s == ServerSettings() and problems


def test_ranges_are_enforced():
    s, problems = parse_settings({"confidenceThreshold": 2.0, "singleLineSlots": [0]})
    assert s.confidenceThreshold == ServerSettings.confidenceThreshold and len(problems) == 2


def test_readme_table_matches_the_settings_and_schema_covers_all():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert settings_table() in readme, "README's configuration table is stale: paste settings_table()"
    assert set(settings_schema()) == {f for f in ServerSettings.__dataclass_fields__}
