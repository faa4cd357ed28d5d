"""Shared fixtures: an isolated DDS domain per test that starts ROS processes."""
from __future__ import annotations

import hashlib
import os

import pytest


@pytest.fixture
def ros_domain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A ROS_DOMAIN_ID unique to this test and process, discovery kept on localhost."""
    key = f"{os.getpid()}:{request.node.nodeid}".encode()
    domain = 1 + int(hashlib.sha256(key).hexdigest(), 16) % 100  # ROS-recommended 0..101
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> object:
    """One intra-op torch thread: on a busy 2-core machine (ROS nodes in other processes)
    two OpenMP threads spin-wait and run far slower."""
    try:
        import torch
    except ImportError:  # torch-free test runs
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
