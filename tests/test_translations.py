"""Translations of a page that leaves a node are gone before the node acknowledges it:
the deferred path (the event thread could not take a TB page lock) holds the
acknowledgement until the glue's thread has invalidated the page."""

from __future__ import annotations

import time

import pytest
from conftest import ClusterFactory

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]


def test_a_guest_runs_right_when_every_page_left_ack_waits_for_the_invalidation(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every page that leaves takes the path a busy TB page lock takes: the ack is
    # held until the hk-tbinval thread has dropped the page's translations.
    monkeypatch.setenv("HK_DEBUG_TB_DEFER", "1")
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    record = cluster.run_workload("falseshare", {"threads": 2, "iters": 20000, "cpus": "0,1"},
                                  guest_timeout=300)
    assert record.ok, record.raw
    # The acks really were held, and each was released once its page's
    # translations were gone (a lost release would have hung the writer above).
    deadline = time.monotonic() + 10
    while True:
        glue = [info["stats"]["glue"] for info in cluster.node_stats()]
        held = [(g["tb-invalidate-deferred"], g["tb-acks-released"]) for g in glue]
        if all(released == deferred for deferred, released in held):
            break
        assert time.monotonic() < deadline, f"(deferred, released) per node: {held}"
        time.sleep(0.5)
    assert all(deferred > 0 for deferred, _ in held), held
