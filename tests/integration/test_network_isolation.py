"""Serving and building without a way to the host: checked by configuration and over loopback.

Nothing here sends traffic to any address but 127.0.0.1: what a container could reach is read
from the engine's network settings, the container's own route table and the host's firewall.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time

import docker
import docker.errors
import pytest

from grader.domain.rubric import DEFAULT_RUBRIC
from grader.engine.buildnet import BRIDGE_OPTION, add_rules, build_network, firewall_problem
from grader.engine.containers import (
    ROLE_LABEL,
    RUN_LABEL,
    SUBMISSION_LABEL,
    ResourceLimits,
    build_image,
    grader_labels,
    own_network,
    remove_labelled,
    start_server,
)
from grader.engine.daemon import connect
from grader.engine.forwarder import ForwarderError, start_forwarder
from grader.engine.standins import BASE_IMAGE
from tests.cli import ROOT

pytestmark = pytest.mark.integration

INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
# Logged by the handler below when TorchServe loads it: what a handler looking for a way out sees.
LOOK_AROUND = """
import json as _json
with open("/proc/net/route") as _routes, open("/proc/net/if_inet6") as _inet6:
    _seen = {"routes": _routes.read().splitlines()[1:], "inet6": _inet6.read().splitlines()}
    print("WAY-OUT " + _json.dumps(_seen), flush=True)
"""


def host_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """Every IPv4 address of this host, with its interface."""
    listing = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    found = []
    for line in listing.stdout.splitlines():
        fields = line.split()
        found.append((fields[1], ipaddress.IPv4Interface(fields[fields.index("inet") + 1])))
    return found


def input_rules(bridge: str) -> list[str]:
    return firewall_rules(bridge, "INPUT")


def firewall_rules(bridge: str, *chain: str) -> list[str]:
    """The rules (of one chain, or all) that name `bridge` as interface."""
    listing = subprocess.run(["iptables", "-w", "-S", *chain], capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines() if f" {bridge} " in f"{line} "]


def routes(lines: list[str]) -> list[tuple[str, ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """(interface, destination, gateway) of /proc/net/route lines (little-endian hex)."""

    def address(text: str) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(bytes.fromhex(text)[::-1])

    table = []
    for line in lines:
        iface, destination, gateway, _, _, _, _, mask = line.split()[:8]
        network = ipaddress.IPv4Network(f"{address(destination)}/{address(mask)}")
        table.append((iface, network, address(gateway)))
    return table


class Watcher(threading.Thread):
    """Records, while a grading run goes on, the engine's view of one submission's containers and
    networks, the host's addresses and the firewall rules of its build bridges."""

    def __init__(self, client: docker.DockerClient, submission: str) -> None:
        super().__init__(daemon=True)
        self.client, self.submission = client, submission
        self.stop = threading.Event()
        self.serve: dict | None = None
        self.serve_networks: dict[str, dict] = {}
        self.forwarder: dict | None = None
        self.forwarder_networks: dict[str, dict] = {}
        self.host: list[tuple[str, ipaddress.IPv4Interface]] = []
        self.serve_rules: list[str] = []  # the firewall's rules of the server's bridge
        self.build_rules: dict[str, list[str]] = {}  # build bridge -> its INPUT rules seen
        self.failures: list[str] = []

    def run(self) -> None:
        selector = {"label": f"{SUBMISSION_LABEL}={self.submission}"}
        while not self.stop.is_set():
            try:
                for network in self.client.networks.list(filters=selector):
                    bridge = (network.attrs.get("Options") or {}).get(BRIDGE_OPTION)
                    if bridge and not self.build_rules.get(bridge):
                        self.build_rules[bridge] = input_rules(bridge)
                for container in self.client.containers.list(filters=selector):
                    role = container.labels.get(ROLE_LABEL)
                    if role == "serve" and self.serve is None:
                        self.serve = container.attrs
                        self.serve_networks = self._networks(container.attrs)
                        self.host = host_addresses()
                        for network in self.serve_networks.values():
                            self.serve_rules += firewall_rules("br-" + network["Id"][:12])
                    elif role == "forwarder" and self.forwarder is None:
                        self.forwarder = container.attrs
                        self.forwarder_networks = self._networks(container.attrs)
            except docker.errors.NotFound:
                pass  # removed while looked at
            except docker.errors.APIError as error:
                self.failures.append(str(error))
            time.sleep(0.1)

    def _networks(self, attrs: dict) -> dict[str, dict]:
        names = attrs["NetworkSettings"]["Networks"]
        return {name: self.client.networks.get(name).attrs for name in names}


@pytest.fixture(scope="module")
def client():
    client = connect()
    client.images.get(BASE_IMAGE)  # made by `grader setup`; the forwarder runs on it
    return client


def test_a_served_example_scores_through_the_forwarder_with_no_way_out(client, tmp_path):
    """The token-auth example (60/100: every serve check; the grader reads key_file.json by
    exec), with a handler that looks for a way out when TorchServe loads it."""
    submission = f"net-iso-{secrets.token_hex(3)}"
    folder = tmp_path / "subs" / submission
    shutil.copytree(ROOT / "submissions" / "serve-token-auth", folder)
    handler = folder / "serve" / "handler.py"
    handler.write_text(LOOK_AROUND + handler.read_text())
    reports = tmp_path / "reports"
    # Fewer hidden digits than by default: what is checked here is the way to the server.
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(
        DEFAULT_RUBRIC.read_text().replace("heldout_digits = 800", "heldout_digits = 100")
    )
    watcher = Watcher(client, submission)
    watcher.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "grader", "grade", str(folder), "--report-dir", str(reports),
             "--rubric", str(rubric), "--force", "-j", "1", "--progress", "lines"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        watcher.stop.set()
        watcher.join()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((reports / "results.json").read_text())["submissions"][submission]
    assert result["score"] == 60, json.dumps(result["checks"], indent=1)[:4000]
    assert not watcher.failures

    # The server: alone on one internal network whose bridge has no address on the host.
    assert watcher.serve is not None and watcher.forwarder is not None
    ((name, network),) = watcher.serve_networks.items()
    assert network["Internal"] is True
    assert network["Options"].get(INHIBIT_IPV4) == "true"
    assert network["EnableIPv6"] is False
    endpoint = watcher.serve["NetworkSettings"]["Networks"][name]
    subnet = ipaddress.IPv4Interface(f"{endpoint['IPAddress']}/{endpoint['IPPrefixLen']}").network
    bridge = "br-" + network["Id"][:12]
    assert all(interface != bridge for interface, _ in watcher.host), watcher.host
    assert not [(i, a) for i, a in watcher.host if a.ip in subnet or subnet.overlaps(a.network)]
    assert watcher.serve["HostConfig"]["PortBindings"] in ({}, None)  # nothing of its own
    # The engine's rules for internal networks: what leaves the subnet is dropped.
    assert f"-A DOCKER-ISOLATION-STAGE-1 ! -d {subnet} -i {bridge} -j DROP" in watcher.serve_rules
    assert f"-A DOCKER-ISOLATION-STAGE-1 ! -s {subnet} -o {bridge} -j DROP" in watcher.serve_rules

    # What the handler saw from inside: its subnet, and at most a default route through the
    # network's gateway address, which nobody holds (the bridge has no address on the host).
    log = (reports / "artifacts" / submission / "server.log").read_text()
    seen = [line.split("WAY-OUT ", 1)[1] for line in log.splitlines() if "WAY-OUT " in line]
    assert seen, log[-2000:]
    looked = json.loads(seen[0])
    table = routes(looked["routes"])
    # No IPv6 either: the host's side of the bridge has a link-local address, the server none.
    assert [line for line in looked["inet6"] if line.split()[-1] != "lo"] == []
    host_ips = {address.ip for _, address in watcher.host}
    gateway = ipaddress.IPv4Address(network["IPAM"]["Config"][0]["Gateway"])
    assert (("eth0", subnet, ipaddress.IPv4Address(0))) in table
    for _, destination, via in table:
        assert destination == subnet or (destination.prefixlen == 0 and via == gateway), table
        assert via not in host_ips

    # The forwarder: on that network and its own bridge, published on 127.0.0.1 only.
    assert watcher.forwarder["Config"]["Labels"][ROLE_LABEL] == "forwarder"
    assert set(watcher.forwarder_networks) == {name, f"{name}-front"}
    assert watcher.forwarder_networks[f"{name}-front"]["Internal"] is False
    bindings = watcher.forwarder["HostConfig"]["PortBindings"]
    assert set(bindings) == {"8080/tcp", "8081/tcp", "8082/tcp"}
    assert {b["HostIp"] for port in bindings.values() for b in port} == {"127.0.0.1"}

    # The inference image was built on a bridge of its own whose traffic to the host is dropped.
    ((build_bridge, rules),) = watcher.build_rules.items()
    assert any(rule.endswith("-j DROP") for rule in rules), rules
    assert input_rules(build_bridge) == []

    # Nothing of the submission is left: server, forwarder, networks.
    selector = {"label": f"{SUBMISSION_LABEL}={submission}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.networks.list(filters=selector) == []


@pytest.mark.skipif(firewall_problem(connect()) is not None, reason="needs iptables as root")
def test_builds_reach_the_internet_but_not_the_host_or_nothing_at_all(client, tmp_path):
    labels = grader_labels(f"test-buildnet-{secrets.token_hex(3)}", "buildnet", "test")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo {secrets.token_hex(4)} && cat /proc/net/route\n"
    )
    name = f"lab5-grader-{labels[RUN_LABEL]}-build"
    try:
        for setting in ("isolated", "none"):
            with build_network(client, setting, name, labels, None) as network:
                if setting == "isolated":
                    assert network.mode == name and network.note is None
                    options = client.networks.get(name).attrs
                    bridge = options["Options"][BRIDGE_OPTION]
                    assert options["Internal"] is False  # the internet stays reachable
                    rules = input_rules(bridge)
                    # Name look-ups may reach the host's resolver; everything else to it drops.
                    assert [rule.split(" -j ")[-1] for rule in rules] == [
                        "ACCEPT",
                        "ACCEPT",
                        "DROP",
                    ]
                    assert sorted(" --dport 53 " in rule for rule in rules) == [False, True, True]
                else:
                    assert network.mode == "none"
                built = build_image(
                    client, context=tmp_path, dockerfile=tmp_path / "Dockerfile",
                    tag=f"lab5-grader/test-buildnet:{setting}", labels=labels,
                    log_path=tmp_path / f"{setting}.log", timeout_s=120, network_mode=network.mode,
                )  # fmt: skip
                assert built.ok, built.error
            log = (tmp_path / f"{setting}.log").read_text()
            # A default route out when isolated; only loopback (no route at all) without network.
            assert ("eth0\t00000000" in log) == (setting == "isolated"), log
            (tmp_path / "Dockerfile").write_text(
                (tmp_path / "Dockerfile").read_text().replace("echo ", "echo x")
            )  # not served from the build cache the second time
        assert input_rules(bridge) == []
        with pytest.raises(docker.errors.NotFound):
            client.networks.get(name)
    finally:
        remove_labelled(client, labels)


@pytest.mark.skipif(firewall_problem(connect()) is not None, reason="needs iptables as root")
def test_an_interrupted_builds_network_and_rules_are_removed_with_its_labels(client):
    labels = grader_labels(f"test-buildnet-{secrets.token_hex(3)}", "buildnet", "test")
    name = f"lab5-grader-{labels[RUN_LABEL]}-build"
    context = build_network(client, "isolated", name, labels, None)
    context.__enter__()  # and never left, as when the harness is killed mid-build
    bridge = client.networks.get(name).attrs["Options"][BRIDGE_OPTION]
    assert len(input_rules(bridge)) == 3
    remove_labelled(client, labels)
    assert input_rules(bridge) == []
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(name)


@pytest.mark.skipif(firewall_problem(connect()) is not None, reason="needs iptables as root")
def test_rules_the_firewall_refuses_are_reported_and_none_is_left():
    bridge = "l5gb-" + "x" * 20  # longer than an interface name may be
    failure = add_rules(bridge) or ""
    assert failure.startswith("`iptables -I INPUT` failed: "), failure
    assert "IFNAMSIZ" in failure and "\n" not in failure  # iptables' own first line
    assert input_rules(bridge) == []


@pytest.mark.skipif(firewall_problem(connect()) is not None, reason="needs iptables as root")
def test_without_the_right_to_change_the_firewall_builds_are_told_why():
    """Root without CAP_NET_ADMIN, as in a container the harness might run in."""
    probe = (
        "import docker; from grader.engine.buildnet import firewall_problem; "
        "print(firewall_problem(docker.DockerClient("
        "base_url='unix:///var/run/docker.sock', version='1.41')))"
    )
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin", sys.executable, "-c", probe],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("`iptables -S INPUT` failed: "), done.stdout
    assert "Permission denied" in done.stdout


def test_a_forwarder_that_cannot_start_is_the_harness_fault_and_takes_the_server_along(
    client, tmp_path
):
    from grader.domain.settings import Settings
    from grader.engine.baseimages import BaseImageProvider
    from grader.stages.labsteps import ALPINE

    BaseImageProvider(client, Settings.from_env(), print).ensure(ALPINE)  # has no Python
    labels = grader_labels(f"test-forwarder-{secrets.token_hex(3)}", "forwarder", "test")
    limits = ResourceLimits(cpus=0.5, memory_mb=128, pids=64, wall_seconds=0)
    try:
        network = own_network(client, f"lab5-grader-{labels[RUN_LABEL]}", labels)
        with pytest.raises(ForwarderError) as raised:
            start_server(
                client, image=ALPINE, ports=[8080], limits=limits, labels=labels,
                network=network, relay_image=ALPINE, forwarder_labels=labels,
            )  # fmt: skip
        message = str(raised.value)
        assert message.startswith("the forwarder to the server could not start: "), message
        assert "python3" in message  # not in that image
        mine = {"label": f"{RUN_LABEL}={labels[RUN_LABEL]}"}
        assert client.containers.list(all=True, filters=mine) == []  # the server went too
        with pytest.raises(ForwarderError) as raised:  # the relay cannot listen twice on a port
            start_forwarder(
                client, image=BASE_IMAGE, network=network, target="server", ports=[8080, 8080],
                labels=labels,
            )  # fmt: skip
        message = str(raised.value)
        assert message.startswith("the forwarder to the server did not get ready (container "
                                  "exited after "), message  # fmt: skip
        assert "Address already in use" in message
        with pytest.raises(ForwarderError) as raised:
            start_forwarder(
                client, image="lab5-grader/no-such-image:0", network=network, target="server",
                ports=[8080], labels=labels,
            )  # fmt: skip
        assert str(raised.value).startswith("the forwarder to the server could not be created: ")
        assert "no-such-image" in str(raised.value)
    finally:
        remove_labelled(client, labels)
