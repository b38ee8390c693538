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


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium from Debian's packages, driven by chromedriver (installed if missing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from grader.domain.settings import Settings
    from grader.engine.daemon import apt_install

    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        apt_install(["chromium", "chromium-driver"], Settings.from_env())
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1280,2000",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()
