from __future__ import annotations

import docker.models.containers
import pytest

from grader.engine.daemon import api_of


def test_a_container_model_without_a_client_is_refused_by_name():
    orphan = docker.models.containers.Container(attrs={"Id": "0123456789abcdef" * 4})
    with pytest.raises(TypeError, match=r"container 0123456789ab was not made by a Docker client"):
        api_of(orphan)
