"""What image builds may reach: the profile's `build_network`, and when the host cannot be cut
off from them."""

from __future__ import annotations

import docker
import pytest

from grader.domain.errors import RubricError
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric
from grader.engine.buildnet import build_network, firewall_problem, rules


def test_builds_are_isolated_from_the_host_by_default():
    rubric = load_rubric()
    assert {p.build_network for p in rubric.profiles.values()} == {"isolated"}


def test_a_profile_can_build_without_network(tmp_path):
    text = DEFAULT_RUBRIC.read_text().replace(
        'build_network = "isolated"', 'build_network = "none"'
    )
    (tmp_path / "rubric.toml").write_text(text)
    assert load_rubric(tmp_path / "rubric.toml").profile("offline").build_network == "none"


@pytest.mark.parametrize("value", ['"host"', "false", '"bridge"'])
def test_other_build_networks_are_refused_with_the_choices(tmp_path, value):
    text = DEFAULT_RUBRIC.read_text().replace(
        'build_network = "isolated"', f"build_network = {value}"
    )
    (tmp_path / "rubric.toml").write_text(text)
    with pytest.raises(RubricError) as raised:
        load_rubric(tmp_path / "rubric.toml")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'rubric.toml'}: profiles.offline.build_network: ")
    shown = "false" if value == "false" else value.replace(chr(34), chr(39))
    assert message.endswith(
        'must be "isolated" (builds reach the internet but not this host) or "none" '
        f"(builds have no network), got {shown}"
    )


def test_without_a_firewall_the_build_is_told_it_can_reach_the_host():
    with build_network(None, "isolated", "unused", {}, "`iptables` is not installed") as network:  # type: ignore[arg-type]
        assert network.mode is None  # the engine's default bridge, as a plain `docker build`
        assert network.note == (
            "image builds can reach services on the grading host: `iptables` is not installed, "
            "so the harness cannot cut builds off from the host; run it as root with iptables, "
            'or set build_network = "none" in the profile to build without network'
        )


def test_no_network_needs_no_firewall():
    with build_network(None, "none", "unused", {}, "no iptables") as network:  # type: ignore[arg-type]
        assert (network.mode, network.note) == ("none", None)


def test_an_engine_on_another_machine_cannot_be_firewalled_from_here():
    client = docker.DockerClient(base_url="tcp://127.0.0.1:2375", version="1.41")
    assert (
        firewall_problem(client)
        == "the Docker engine at http://127.0.0.1:2375 is on another machine"
    )


def test_the_rules_drop_all_but_name_lookups_sent_to_the_host():
    """Inserted one by one at the top of INPUT, so the last inserted ends up first."""
    inserted = rules("l5gb-test")
    in_force = list(reversed(inserted))
    assert [rule[-6:] for rule in in_force] == [["-j", "ACCEPT", *COMMENT]] * 2 + [
        ["-j", "DROP", *COMMENT]
    ]
    assert {(rule[3], rule[5]) for rule in in_force[:2]} == {("tcp", "53"), ("udp", "53")}
    assert all(rule[:2] == ["-i", "l5gb-test"] for rule in in_force)


COMMENT = ["-m", "comment", "--comment", "lab5-grader build network"]
