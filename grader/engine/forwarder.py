"""Networks for serving without a way out, and the forwarder the harness reaches servers through.

A serving container sits alone on an internal bridge whose host side has no address
(`inhibit_ipv4`). The engine still gives it a default route through the network's gateway
address, but nobody holds that address, and the engine's rules for internal networks drop what
leaves the subnet: neither the internet nor a service listening on the host's addresses can be
reached. The engine publishes no ports from such a network, so a forwarder container of the
harness joins it and a normal bridge ("front") where its ports are published on 127.0.0.1, and
relays them to the server's address (grader/engine/relay.py).
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

from grader.domain.errors import GraderError
from grader.engine import relay

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
    front = f"{network}{FRONT_SUFFIX}"
    container: docker.models.containers.Container | None = None
    try:
        subnets = [
            entry["Subnet"]
            for entry in client.networks.get(network).attrs["IPAM"]["Config"] or []
            if entry.get("Subnet")
        ]
        command = ["python3", "-c", RELAY_SOURCE, "--target", target,
                   "--ports", ",".join(map(str, ports)),
                   "--max-connections", str(MAX_CONNECTIONS)]  # fmt: skip
        for subnet in subnets:
            command += ["--deny", subnet]
        client.networks.create(front, driver="bridge", labels=dict(labels), check_duplicate=True)
        container = client.containers.create(
            image,
            command=command,
            user="65534:65534",
            working_dir="/",
            network=front,
            # A host port of None is a free one; the stubs allow only a number.
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in ports},  # type: ignore[misc]
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=FORWARDER_MEMORY,
            memswap_limit=FORWARDER_MEMORY,
            pids_limit=FORWARDER_PIDS,
            labels=dict(labels),
            log_config=log_config,
        )
        client.networks.get(network).connect(container)
        container.start()
        _wait_ready(container)
        container.reload()
    except (docker.errors.APIError, ForwarderError) as error:
        _remove(client, container, front)
        if isinstance(error, ForwarderError):
            raise
        stage = "be created" if container is None else "start"
        raise ForwarderError(f"the forwarder to the server could not {stage}: {error}") from None
    published = container.attrs["NetworkSettings"].get("Ports") or {}
    host_ports = {}
    for port in ports:
        bindings = published.get(f"{port}/tcp") or []
        if bindings:
            host_ports[port] = int(bindings[0]["HostPort"])
    return Forwarder(container, host_ports)


def _remove(
    client: docker.DockerClient, container: docker.models.containers.Container | None, front: str
) -> None:
    """What a failed start made: the container, then its bridge."""
    if container is not None:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.APIError):
        client.networks.get(front).remove()


def _wait_ready(container: docker.models.containers.Container) -> None:
    started = time.monotonic()
    while True:
        log = container.logs().decode("utf-8", "replace")
        if relay.READY in log:
            return
        container.reload()
        waited = time.monotonic() - started
        if container.status not in {"created", "running"} or waited > READY_TIMEOUT_S:
            raise ForwarderError(
                f"the forwarder to the server did not get ready (container {container.status} "
                f"after {waited:.0f} s); its output: {log.strip()[-500:] or 'none'}"
            )
        time.sleep(0.1)
