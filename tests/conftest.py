from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

SCHEMA = Path(__file__).parent / "schemas" / "junit.xsd"


@pytest.fixture(scope="session")
def junit_schema():
    """Validates a junit.xml text against our schema; returns the parsed tree."""
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))

    def validate(text: str):
        tree = etree.fromstring(text.encode())
        schema.assertValid(tree)
        return tree

    return validate
