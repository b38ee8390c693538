"""The Docker layer against the real engine: limits, isolation, time limits, logs."""

from __future__ import annotations

import time

import docker
import docker.types
import pytest
import requests

from grader.engine.containers import (
    LOG_HEAD_BYTES,
    LOG_TAIL_BYTES,
    STEP_IMAGE,
    ResourceLimits,
    build_image,
    grader_labels,
    own_network,
    remove_labelled,
    run_to_exit,
    start_server,
)
from grader.engine.daemon import connect
from grader.engine.standins import BASE_IMAGE

pytestmark = pytest.mark.integration

LIMITS = ResourceLimits(cpus=1.0, memory_mb=256, pids=64, wall_seconds=60)


@pytest.fixture(scope="module")
def client():
    client = connect()
    client.images.get(BASE_IMAGE)  # made by `grader setup`
    return client


@pytest.fixture
def labels(request):
    labels = grader_labels("test-" + request.node.name[:40], "sandbox", "test")
    yield labels
    remove_labelled(connect(), labels)


def run(client, labels, tmp_path, script, limits=LIMITS, data=None):
    data = data or tmp_path / "data"
    data.mkdir(exist_ok=True)
    output = tmp_path / "output"
    output.mkdir(exist_ok=True)
    result = run_to_exit(
        client,
        image=BASE_IMAGE,
        command=["sh", "-c", script],
        environment={"MNIST_ROOT": "/data", "OUTPUT_DIR": "/output"},
        mounts=[
            docker.types.Mount("/data", str(data), type="bind", read_only=True),
            docker.types.Mount("/output", str(output), type="bind"),
        ],
        limits=limits,
        labels=labels,
        log_path=tmp_path / "run.log",
    )
    return result, result.log_path.read_text()


def test_isolation_mounts_and_environment(client, labels, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "digits").write_text("x")
    result, log = run(
        client,
        labels,
        tmp_path,
        "ls /sys/class/net; cat /data/digits; echo; "
        "touch /data/new 2>/dev/null && echo data-writable || echo data-read-only; "
        "echo saved > $OUTPUT_DIR/model.pt && echo output-writable; "
        "echo threads=$OMP_NUM_THREADS root=$MNIST_ROOT; "
        "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status",
    )
    assert result.exit_code == 0, log
    assert log.splitlines()[0] == "lo"  # no network interface but loopback
    assert "data-read-only" in log
    assert "output-writable" in log and (tmp_path / "output" / "model.pt").read_text() == "saved\n"
    assert "threads=1 root=/data" in log
    # Docker's defaults minus NET_RAW(13), MKNOD(27), AUDIT_WRITE(29), SYS_CHROOT(18), SETFCAP(31):
    # CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) FSETID(4) KILL(5) SETGID(6) SETUID(7) SETPCAP(8)
    # NET_BIND_SERVICE(10), as bits of the kernel's capability mask.
    kept = sum(1 << bit for bit in (0, 1, 3, 4, 5, 6, 7, 8, 10))
    assert f"CapEff:\t{kept:016x}" in log
    assert "NoNewPrivs:\t1" in log


def test_root_writes_into_another_users_folder_as_under_plain_docker(client, labels, tmp_path):
    """`USER root` on top of an image whose home belongs to another user (the TorchServe image's
    model-server) must still create folders there, and switch users, as under `docker run`."""
    result, log = run(
        client,
        labels,
        tmp_path,
        "mkdir -p /home/owned && chown 1000:1000 /home/owned && chmod 755 /home/owned && "
        "mkdir /home/owned/logs && echo key > /home/owned/key_file.json && echo root-wrote; "
        "setpriv --reuid=1000 --regid=1000 --clear-groups id -u; "
        "su -s /bin/sh -c 'id -u' nobody; "
        'python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)" '
        "2>&1 | tail -n 1; mknod /tmp/dev c 1 3 2>&1 | tail -n 1",
    )
    assert result.exit_code == 0, log
    assert "root-wrote" in log
    assert "1000\n" in log  # setpriv switched to the other user
    assert "65534" in log  # su to nobody
    assert "PermissionError" in log  # no raw sockets (NET_RAW dropped)
    assert "Operation not permitted" in log  # no device nodes (MKNOD dropped)


def test_cpu_and_pids_limits(client, labels, tmp_path):
    result, log = run(
        client,
        labels,
        tmp_path,
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; "
        'python -c "import subprocess\n'
        "procs = []\n"
        "try:\n"
        "    procs = [subprocess.Popen(['sleep', '20']) for _ in range(200)]\n"
        "except OSError as error:\n"
        "    print('fork refused after', len(procs), type(error).__name__)\n"
        'for p in procs: p.kill()"',
    )
    assert result.exit_code == 0, log
    assert log.split()[0] in {"100000", "100000 100000"} or log.startswith("100000"), log
    assert "fork refused after" in log
    refused_after = int(log.split("fork refused after")[1].split()[0])
    assert refused_after < LIMITS.pids


def test_memory_limit_kills_and_is_reported(client, labels, tmp_path):
    result, log = run(
        client, labels, tmp_path, "python -c \"b = bytearray(1024 * 1024 * 1024); print('no')\""
    )
    assert result.oom_killed, log
    assert result.exit_code != 0
    assert "no" not in log.split()


def test_wall_time_limit_kills_the_container(client, labels, tmp_path):
    limits = ResourceLimits(cpus=1.0, memory_mb=256, pids=64, wall_seconds=3)
    started = time.monotonic()
    result, log = run(client, labels, tmp_path, "echo started; sleep 600", limits=limits)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < 30
    assert "started" in log and "killed at the wall-time limit of 3 s" in log
    own = [f"{key}={value}" for key, value in labels.items()]
    assert not client.containers.list(all=True, filters={"label": own})


def test_huge_output_is_capped(client, labels, tmp_path):
    result, log = run(
        client, labels, tmp_path, "head -c 20000000 /dev/zero | tr '\\0' 'x'; echo END"
    )
    assert result.exit_code == 0
    size = (tmp_path / "run.log").stat().st_size
    assert size < LOG_HEAD_BYTES + LOG_TAIL_BYTES + 200
    assert "bytes of output cut here" in log and log.rstrip().endswith("END")


def build(client, labels, tmp_path, steps, tag, timeout_s=300):
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\n{steps}\n")
    return build_image(
        client,
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        tag=tag,
        labels=labels,
        log_path=tmp_path / "build.log",
        timeout_s=timeout_s,
    )


def test_build_log_and_labels(client, labels, tmp_path):
    result = build(client, labels, tmp_path, "RUN echo building-step", "lab5-grader/test-build:ok")
    assert result.ok, result.error
    assert "building-step" in result.log_path.read_text()
    assert client.images.get("lab5-grader/test-build:ok").labels["lab5-grader.role"] == "test"


def test_build_error_is_reported(client, labels, tmp_path):
    result = build(client, labels, tmp_path, "RUN echo nope && exit 3", "lab5-grader/test-build:no")
    assert not result.ok
    assert "returned a non-zero code: 3" in (result.error or "")
    assert "ERROR:" in result.log_path.read_text()


def test_build_time_limit_cancels_the_build(client, labels, tmp_path):
    marker = f"slow-{time.time_ns()}"  # names this build's step container among the host's

    def step_containers() -> list[str]:
        return [c["Id"] for c in client.api.containers(all=True) if marker in c["Command"]]

    started = time.monotonic()
    result = build(client, labels, tmp_path, f"RUN echo {marker} && sleep 600",
                   "lab5-grader/test-build:slow", 4)  # fmt: skip
    assert time.monotonic() - started < 30
    assert result.timed_out and not result.ok
    assert result.error == "the build did not finish within the limit of 4 s"
    # The engine cancels the build and removes its intermediate container.
    deadline = time.monotonic() + 30
    while step_containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not step_containers()


def test_a_failed_build_leaves_no_step_images(client, labels, tmp_path):
    marker = f"partial-{time.time_ns()}"  # a step no earlier build has cached
    result = build(
        client, labels, tmp_path, f"RUN echo {marker} > /a\nRUN echo {marker} > /b\nRUN exit 4",
        "lab5-grader/test-build:partial",
    )  # fmt: skip
    assert not result.ok
    steps = STEP_IMAGE.findall(result.log_path.read_text())
    assert len(steps) == 3  # the base image, then the two finished steps
    for step in steps[1:]:
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(step)
    client.images.get(steps[0])  # the base image stays


def test_servers_on_their_own_networks_reach_nothing_and_answer_through_forwarders(
    client, labels, tmp_path
):
    from grader.domain.settings import Settings
    from grader.engine.baseimages import BaseImageProvider
    from grader.stages.labsteps import ALPINE

    BaseImageProvider(client, Settings.from_env(), print).ensure(ALPINE)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {ALPINE}\nRUN mkdir /www && hostname > /www/index.html\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    image = "lab5-grader/test-httpd:latest"
    built = build_image(client, context=tmp_path, dockerfile=tmp_path / "Dockerfile", tag=image,
                        labels=labels, log_path=tmp_path / "build.log", timeout_s=120)  # fmt: skip
    assert built.ok, built.error
    run = labels["lab5-grader.run"]
    servers = {}
    for name in ("a", "b"):
        network = own_network(client, f"lab5-grader-{run}-{name}", labels)
        servers[name] = start_server(
            client, image=image, ports=[8080], limits=LIMITS, labels=labels, network=network,
            relay_image=BASE_IMAGE, forwarder_labels=labels,
        )  # fmt: skip
    b = servers["b"]
    for name, server in servers.items():
        assert server.forwarder is not None
        server.forwarder.reload()
        bindings = server.forwarder.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
        assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}
        server.container.reload()
        # Alone on an internal network of its own (its forwarder joins it), which is what keeps
        # it from the other submission's server; nothing is checked by sending to it.
        (network,) = server.container.attrs["NetworkSettings"]["Networks"]
        assert network == f"lab5-grader-{run}-{name}"
        assert client.networks.get(network).attrs["Internal"] is True
    answer, deadline = None, time.monotonic() + 20
    while answer is None and time.monotonic() < deadline:
        try:
            answer = requests.get(b.url(8080) + "/", timeout=2)
        except requests.RequestException:
            time.sleep(0.3)
    assert answer is not None and answer.status_code == 200
    remove_labelled(client, labels)
    assert client.networks.list(filters={"label": f"lab5-grader.run={run}"}) == []


def test_a_build_context_over_the_limit_is_refused_before_it_is_sent(client, labels, tmp_path):
    (tmp_path / "dataset.bin").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY dataset.bin /\n")
    result = build_image(
        client, context=tmp_path, dockerfile=tmp_path / "Dockerfile",
        tag="lab5-grader/test-build:context", labels=labels, log_path=tmp_path / "build.log",
        timeout_s=60, max_context_bytes=2_000_000,
    )  # fmt: skip
    assert not result.ok
    assert result.error == (
        f"the build context {tmp_path.name}/ is 3 MB, more than the limit of 2 MB; leave datasets, "
        "virtualenvs and checkpoints out (the grader mounts MNIST at /data) or list them in "
        ".dockerignore"
    )
    assert result.log_path.read_text().startswith("build context: 2 files, 3.0 MB\n")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("lab5-grader/test-build:context")
    (tmp_path / ".dockerignore").write_text("*.bin\n")  # what .dockerignore leaves out is not sent
    result = build_image(
        client, context=tmp_path, dockerfile=tmp_path / "Dockerfile",
        tag="lab5-grader/test-build:context", labels=labels, log_path=tmp_path / "build.log",
        timeout_s=60, max_context_bytes=2_000_000,
    )  # fmt: skip
    assert "COPY failed" in (result.error or "")


def test_a_build_printing_megabytes_keeps_head_and_tail(client, labels, tmp_path):
    noisy = (
        "RUN i=0; while [ $i -lt 90000 ]; do echo line-$i-......................................"
        "......................; i=$((i+1)); done"
    )  # about 8 MB of output
    result = build(client, labels, tmp_path, noisy, "lab5-grader/test-build:noisy")
    assert result.ok, result.error
    log = result.log_path.read_text()
    assert len(log) < LOG_HEAD_BYTES + LOG_TAIL_BYTES + 200
    assert "line-0-" in log and "line-89999-" in log
    assert "bytes of output cut here" in log
