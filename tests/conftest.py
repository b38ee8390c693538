from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from lxml import etree

SCHEMAS = Path(__file__).parent / "schemas"
SCHEMA = SCHEMAS / "junit.xsd"


@pytest.fixture(scope="session")
def junit_schema():
    """Validates a junit.xml text against our schema; returns the parsed tree."""
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))

    def validate(text: str):
        tree = etree.fromstring(text.encode())
        schema.assertValid(tree)
        return tree

    return validate


@pytest.fixture(scope="session")
def gradescope_schema():
    """Validates a Gradescope results.json document against Gradescope's documented format."""
    validator = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / "gradescope-results.json").read_text())
    )
    return validator.validate
