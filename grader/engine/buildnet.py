"""The network image builds run on: the internet (students `pip install`), but not the host.

Each build gets a bridge of its own, with a known interface name, and firewall rules that drop
what its containers send to the host itself (any of the host's addresses: the INPUT chain sees
exactly the packets addressed to the host), except name look-ups, which the engine's resolver may
forward to a server on the host. Traffic to other containers' bridges is dropped by the engine's
own isolation rules. Where the rules cannot be set (no `iptables`, not root, an engine on another
machine) the build runs on the engine's default bridge and the reason is told; a profile with
`build_network = "none"` builds without any network instead.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import docker
import docker.errors
import docker.models.networks

BRIDGE_OPTION = "com.docker.network.bridge.name"
BRIDGE_PREFIX = "l5gb-"  # interface names are at most 15 characters
RULE_COMMENT = "lab5-grader build network"
IPTABLES_TIMEOUT_S = 30.0
NONE = "none"  # the profile's build_network for no network at all


@dataclass(frozen=True)
class BuildNetwork:
    mode: str | None  # the build's network mode: a network's name, "none", or None (default)
    note: str | None = None  # why the host is not cut off, when it is not


def rules(bridge: str) -> list[list[str]]:
    """The INPUT rules of a build bridge, in the order they are inserted at the top: DNS first,
    so that it ends up above the DROP."""
    comment = ["-m", "comment", "--comment", RULE_COMMENT]
    return [
        ["-i", bridge, "-j", "DROP", *comment],
        ["-i", bridge, "-p", "udp", "--dport", "53", "-j", "ACCEPT", *comment],
        ["-i", bridge, "-p", "tcp", "--dport", "53", "-j", "ACCEPT", *comment],
    ]


def _iptables(arguments: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", *arguments],
        capture_output=True,
        text=True,
        timeout=IPTABLES_TIMEOUT_S,
        check=False,
    )


def firewall_problem(client: docker.DockerClient) -> str | None:
    """Why rules for build bridges cannot be set here, or None when they can."""
    base_url = str(client.api.base_url)
    if base_url != "http+docker://localhost":  # a unix socket: the engine is on this host
        return f"the Docker engine at {base_url} is on another machine"
    if shutil.which("iptables") is None:
        return "`iptables` is not installed"
    try:
        listing = _iptables(["-S", "INPUT"])
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`iptables -S INPUT` failed: {error}"
    if listing.returncode != 0:
        return f"`iptables -S INPUT` failed: {_first_line(listing)}"
    return None


def _first_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[0] if lines else f"exit status {done.returncode}"


def degraded_note(problem: str) -> str:
    return (
        f"image builds can reach services on the grading host: {problem}, so the harness cannot "
        'cut builds off from the host; run it as root with iptables, or set build_network = "none" '
        "in the profile to build without network"
    )


@contextlib.contextmanager
def build_network(
    client: docker.DockerClient,
    setting: str,
    name: str,
    labels: Mapping[str, str],
    problem: str | None,
) -> Iterator[BuildNetwork]:
    """The network one build runs on, for the profile's `setting`; removed afterwards.

    `problem` is `firewall_problem`'s answer, asked once per grader.
    """
    if setting == NONE:
        yield BuildNetwork(NONE)
        return
    if problem is not None:
        yield BuildNetwork(mode=None, note=degraded_note(problem))
        return
    bridge = BRIDGE_PREFIX + secrets.token_hex(5)
    network = client.networks.create(
        name,
        driver="bridge",
        options={BRIDGE_OPTION: bridge},
        enable_ipv6=False,
        labels=dict(labels),
        check_duplicate=True,
    )
    try:
        failure = add_rules(bridge)
        if failure is not None:
            yield BuildNetwork(mode=None, note=degraded_note(failure))
        else:
            yield BuildNetwork(name)
    finally:
        remove_rules(bridge)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


def add_rules(bridge: str) -> str | None:
    """Insert the rules of `bridge`; what went wrong (none left behind), or None."""
    for rule in rules(bridge):
        try:
            done = _iptables(["-I", "INPUT", *rule])
        except (OSError, subprocess.TimeoutExpired) as error:
            remove_rules(bridge)
            return f"`iptables -I INPUT` failed: {error}"
        if done.returncode != 0:
            remove_rules(bridge)
            return f"`iptables -I INPUT` failed: {_first_line(done)}"
    return None


def remove_rules(bridge: str) -> None:
    """Delete every rule of `bridge` (each as often as it is there)."""
    for rule in rules(bridge):
        for _ in range(10):
            try:
                if _iptables(["-D", "INPUT", *rule]).returncode != 0:
                    break
            except (OSError, subprocess.TimeoutExpired):
                break


def bridge_of(network: docker.models.networks.Network) -> str | None:
    """The interface of a build network, as named by the harness (None for others)."""
    name = (network.attrs.get("Options") or {}).get(BRIDGE_OPTION, "")
    return name if name.startswith(BRIDGE_PREFIX) else None
