"""The needle_communicators hook: found, isolated, recorded and listed like backends."""

from __future__ import annotations

import json
import subprocess
import sys

import needle.distributed as dist
import pytest
from needle.distributed import CommunicatorError
from needle.plugins import CommunicatorSpec, hookimpl, manager


def test_core_registers_local_through_the_hook(fresh_plugins) -> None:
    record = fresh_plugins.communicators()["local"]
    assert record.plugin == "needle.distributed" and record.spec.distribution == "needle-core"
    assert fresh_plugins.load_communicator("local").status == "loaded"


def test_a_plugin_communicator_is_found_and_used(spy_job) -> None:
    assert manager.communicators()["spy"].plugin == "test-spy"
    assert dist.communicator() is spy_job and dist.world_size() == 1


def test_a_hook_that_raises_is_recorded_and_isolated(fresh_plugins) -> None:
    class Broken:
        @hookimpl
        def needle_communicators(self):
            raise RuntimeError("no NCCL here (test)")

    record = fresh_plugins.register(Broken(), name="test-broken")
    assert record.status == "failed" and record.phase == "needle_communicators"
    assert "no NCCL here" in record.cause
    assert "local" in fresh_plugins.communicators(), "the others still register"


def test_a_hook_returning_something_else_is_recorded(fresh_plugins) -> None:
    class Wrong:
        @hookimpl
        def needle_communicators(self):
            return ["mpi"]

    record = fresh_plugins.register(Wrong(), name="test-wrong")
    assert record.status == "failed" and "not a CommunicatorSpec" in record.cause


def test_two_plugins_providing_one_name(fresh_plugins, tools) -> None:
    module = tools.module("dup", create=tools.SpyCommunicator)
    fresh_plugins.register(tools.CommPlugin(CommunicatorSpec("dup", module)), name="test-first")
    record = fresh_plugins.register(
        tools.CommPlugin(CommunicatorSpec("dup", module)), name="test-second"
    )
    assert record.status == "failed" and "already provided by plugin 'test-first'" in record.cause
    assert fresh_plugins.communicators()["dup"].plugin == "test-first"


def test_unavailable_communicator_says_why(fresh_plugins, clean_env, tools) -> None:
    module = tools.module(
        "ghost", create=tools.SpyCommunicator, unavailable_reason=lambda: "no ghost net"
    )
    fresh_plugins.register(tools.CommPlugin(CommunicatorSpec("ghost", module)), name="test-ghost")
    assert fresh_plugins.load_communicator("ghost").status == "unavailable"
    with pytest.raises(CommunicatorError, match="'ghost' is unavailable: no ghost net"):
        dist.init("ghost")


def test_module_without_create_fails_to_load(fresh_plugins, clean_env, tools) -> None:
    module = tools.module("nocreate")
    fresh_plugins.register(
        tools.CommPlugin(CommunicatorSpec("nocreate", module)), name="test-nocreate"
    )
    record = fresh_plugins.load_communicator("nocreate")
    assert record.status == "failed" and "defines no create()" in record.reason
    assert fresh_plugins.plugins()["test-nocreate"].phase == "communicator"


def test_launched_communicator_is_picked_by_priority(fresh_plugins, clean_env, tools) -> None:
    low = tools.module("low", create=tools.SpyCommunicator, launched=lambda: True)
    high = tools.module("high", create=tools.SpyCommunicator, launched=lambda: True)
    idle = tools.module("idle", create=tools.SpyCommunicator, launched=lambda: False)
    fresh_plugins.register(
        tools.CommPlugin(
            CommunicatorSpec("low", low, priority=1),
            CommunicatorSpec("high", high, priority=5),
            CommunicatorSpec("idle", idle, priority=9),
        ),
        name="test-launchers",
    )
    assert isinstance(dist.init(), tools.SpyCommunicator)
    assert fresh_plugins.load_communicator("high").status == "loaded"
    dist.finalize()
    clean_env.setenv("NEEDLE_COMMUNICATOR", "local")
    assert dist.init().name == "local", "NEEDLE_COMMUNICATOR wins"


def test_launched_but_unavailable_communicator_fails_init(fresh_plugins, clean_env, tools) -> None:
    module = tools.module(
        "half", create=tools.SpyCommunicator, launched=lambda: True,
        unavailable_reason=lambda: "its library is missing",
    )  # fmt: skip
    spec = CommunicatorSpec("half", module, priority=5, launcher="halfrun")
    fresh_plugins.register(tools.CommPlugin(spec), name="test-half")
    with pytest.raises(CommunicatorError, match="started by halfrun.*its library is missing"):
        dist.init()


def test_create_must_return_a_communicator(fresh_plugins, clean_env, tools) -> None:
    module = tools.module("bad", create=lambda: object())
    fresh_plugins.register(tools.CommPlugin(CommunicatorSpec("bad", module)), name="test-bad")
    with pytest.raises(CommunicatorError, match="lacks the methods"):
        dist.init("bad")


def test_needle_info_lists_communicators(clean_env, tools) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("NEEDLE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "needle", "info", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = {c["name"]: c for c in json.loads(proc.stdout)["communicators"]}
    assert found["local"]["status"] == "loaded" and found["local"]["distribution"] == "needle-core"
    if tools.mpi_installed:
        assert found["mpi"]["distribution"] == "needle-mpi" and not found["mpi"]["launched"]
    text = subprocess.run(
        [sys.executable, "-m", "needle", "info"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    ).stdout
    assert "communicators (needle.distributed):" in text and "local" in text
    assert "mpi4py" not in json.dumps(found["local"])
