"""Fixtures: artifacts built once, a cluster factory that owns every process,
and a check after every test that no QEMU node of ours is left running."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from guest_load import GuestLoad

from testbed import procs
from testbed.artifacts import ensure_artifacts
from testbed.cluster import Artifacts, Cluster
from testbed.config import ClusterSpec
from testbed.progress import Progress

ClusterFactory = Callable[..., Cluster]


def pytest_sessionstart(session: pytest.Session) -> None:
    # Teardown can be skipped (a crashed worker, a killed run): sweep first.
    procs.sweep_orphans()
    # Runs write records into the results store: never into the user's own.
    os.environ["SDS_STORE"] = str(Path(tempfile.mkdtemp(prefix="sds-test-store-")) / "results.sqlite")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def artifacts() -> Artifacts:
    """QEMU and guest images, built (or found in the cache) before any timed part."""
    return ensure_artifacts(Progress(quiet=True))


@pytest.fixture(scope="session")
def needs_hyperkernel(artifacts: Artifacts) -> None:
    """For modules that test the hyperkernel itself (``usefixtures``): skipped without it."""
    if not artifacts.supports_hyperkernel():
        pytest.skip("this QEMU build lacks the hyperkernel patches (-object hyperkernel)")


@pytest.fixture
def cluster_factory(artifacts: Artifacts, tmp_path: Path,
                    request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    clusters: list[Cluster] = []

    def make(initramfs: Path | None = None, **spec: Any) -> Cluster:
        run_dir = tmp_path / f"cluster{len(clusters)}"
        cluster = Cluster(ClusterSpec(**spec), artifacts, run_dir, initramfs=initramfs)
        clusters.append(cluster)
        return cluster

    yield make
    rep = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        if rep is not None and rep.failed and cluster.nodes:
            print(cluster.failure_report())
        cluster.shutdown()


@pytest.fixture
def cluster_spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ClusterSpec fields of ``cluster``: one node with 2 vCPUs unless the test
    parametrizes it indirectly (nodes, vcpus, policy, budgets, ...)."""
    return dict(getattr(request, "param", {"vcpus": 2}))


@pytest.fixture
def cluster(cluster_factory: ClusterFactory, cluster_spec: dict[str, Any]) -> Cluster:
    """The cluster, not yet booted; the factory owns every process it starts."""
    return cluster_factory(**cluster_spec)


@pytest.fixture
def booted_cluster(cluster: Cluster) -> Cluster:
    """The cluster, booted to the guest's shell."""
    cluster.boot()
    return cluster


@pytest.fixture
def loaded_cluster(booted_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[GuestLoad]:
    """The booted cluster running a self-checking workload in a loop (``lock`` on
    every vCPU unless the test says ``@pytest.mark.load(name, args)``).

    After the test, the loop must still be the process it was, and every run
    it finished must have verified its result.
    """
    marker = request.node.get_closest_marker("load")
    vcpus = booted_cluster.spec.vcpus
    name, args = (marker.args if marker else
                  ("lock", f"threads={vcpus} iters=200000 cpus=0-{vcpus - 1} timeout_s=600"))
    load = GuestLoad(booted_cluster, name, args).start()
    yield load
    rep = getattr(request.node, "rep_call", None)
    if (rep is not None and rep.failed) or load.stopped:
        return  # the test's own failure says more, or it judged the runs itself
    assert load.still_running(), f"the {name} loop ended during the test"
    results = load.stop()
    assert results, f"no {name} run finished"
    bad = [r.raw for r in results if not r.ok]
    assert not bad, f"{len(bad)} of {len(results)} {name} runs failed: {bad[:3]}"


# Nodes of module-scoped clusters outlive single tests; their fixture checks them.
_SHARED_NODE_PIDS: set[int] = set()


@pytest.fixture(autouse=True)
def no_node_left_behind() -> Iterator[None]:
    yield
    left = [pid for pid in procs.our_nodes() if pid not in _SHARED_NODE_PIDS]
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not left, f"QEMU node processes left running after the test: {left}"


@pytest.fixture(scope="module")
def module_cluster(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One booted guest shared by a module's tests (set ``CLUSTER_SPEC`` in the module)."""
    spec: dict[str, Any] = getattr(request.module, "CLUSTER_SPEC", {"vcpus": 2})
    cluster = Cluster(ClusterSpec(**spec), artifacts, tmp_path_factory.mktemp("module-cluster"))
    try:
        cluster.start()
        _SHARED_NODE_PIDS.update(node.pid for node in cluster.nodes)
        cluster.boot()
        yield cluster
    except BaseException:
        print(cluster.failure_report())
        raise
    finally:
        cluster.shutdown()
        _SHARED_NODE_PIDS.difference_update(node.pid for node in cluster.nodes)
    left = procs.our_nodes()
    assert not [pid for pid in left if pid not in _SHARED_NODE_PIDS], f"nodes left: {left}"
