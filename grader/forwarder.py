"""Networks for serving without a way out, and the forwarder the harness reaches servers through.

A serving container sits alone on an internal bridge whose host side has no address
(`inhibit_ipv4`). The engine still gives it a default route through the network's gateway
address, but nobody holds that address, and the engine's rules for internal networks drop what
leaves the subnet: neither the internet nor a service listening on the host's addresses can be
reached. The engine publishes no ports from such a network, so a forwarder container of the
harness joins it and a normal bridge ("front") where its ports are published on 127.0.0.1, and
relays them to the server's address (grader/relay.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import docker.types

from grader import relay
from grader.errors import GraderError

INTERNAL_OPTIONS = {"com.docker.network.bridge.inhibit_ipv4": "true"}
FRONT_SUFFIX = "-front"
READY_TIMEOUT_S = 30.0
# The relay threads (two per connection) count against the pids limit.
FORWARDER_PIDS = 512
FORWARDER_MEMORY = "256m"
MAX_CONNECTIONS = 128
RELAY_SOURCE = Path(relay.__file__).read_text(encoding="utf-8")


class ForwarderError(GraderError):
    """The harness's forwarder to a serving container could not be started."""


@dataclass
class Forwarder:
    container: docker.models.containers.Container
    host_ports: dict[int, int]  # server port -> host port on 127.0.0.1


def internal_network(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> str:
    """An internal bridge without an address on the host side; its name."""
    client.networks.create(
        name,
        driver="bridge",
        internal=True,
        options=dict(INTERNAL_OPTIONS),
        enable_ipv6=False,
        labels=dict(labels),
        check_duplicate=True,
    )
    return name


def start_forwarder(
    client: docker.DockerClient,
    *,
    image: str,
    network: str,
    target: str,
    ports: Sequence[int],
    labels: Mapping[str, str],
    log_config: docker.types.LogConfig | None = None,
) -> Forwarder:
    """Relay `ports` of container `target` on the internal `network` to free ports on 127.0.0.1.

    The forwarder's own bridge (`network` + "-front") is created here and carries `labels`, as
    does the container, so that removing what is labelled removes both. Clients from the internal
    network itself are refused: the server cannot use the relay to reach anything but itself.
    """
    try:
        subnets = [
            entry["Subnet"]
            for entry in client.networks.get(network).attrs["IPAM"]["Config"] or []
            if entry.get("Subnet")
        ]
        front = f"{network}{FRONT_SUFFIX}"
        client.networks.create(front, driver="bridge", labels=dict(labels), check_duplicate=True)
        command = ["python3", "-c", RELAY_SOURCE, "--target", target,
                   "--ports", ",".join(map(str, ports)),
                   "--max-connections", str(MAX_CONNECTIONS)]  # fmt: skip
        for subnet in subnets:
            command += ["--deny", subnet]
        container = client.containers.create(
            image,
            command=command,
            user="65534:65534",
            working_dir="/",
            network=front,
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in ports},
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=FORWARDER_MEMORY,
            memswap_limit=FORWARDER_MEMORY,
            pids_limit=FORWARDER_PIDS,
            labels=dict(labels),
            log_config=log_config,
        )
    except docker.errors.APIError as error:
        raise ForwarderError(f"the forwarder to the server could not be created: {error}") from None
    try:
        client.networks.get(network).connect(container)
        container.start()
        _wait_ready(container)
        container.reload()
    except (docker.errors.APIError, ForwarderError) as error:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        if isinstance(error, ForwarderError):
            raise
        raise ForwarderError(f"the forwarder to the server could not start: {error}") from None
    published = container.attrs["NetworkSettings"].get("Ports") or {}
    host_ports = {}
    for port in ports:
        bindings = published.get(f"{port}/tcp") or []
        if bindings:
            host_ports[port] = int(bindings[0]["HostPort"])
    return Forwarder(container, host_ports)


def _wait_ready(container: docker.models.containers.Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        log = container.logs().decode("utf-8", "replace")
        if relay.READY in log:
            return
        container.reload()
        if container.status not in {"created", "running"} or time.monotonic() > deadline:
            state = "exited" if container.status == "exited" else "did not report ready"
            raise ForwarderError(
                f"the forwarder to the server {state} within {READY_TIMEOUT_S:g} s: "
                f"{log.strip()[-500:] or 'no output'}"
            )
        time.sleep(0.1)
