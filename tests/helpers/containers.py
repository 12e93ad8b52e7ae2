"""Listing compose containers while a release adds and removes them."""
from __future__ import annotations

import time

import docker


def labelled_containers(client: docker.DockerClient, labels: str | list[str], all: bool = True) -> list:
    """Containers carrying every label, tolerant of containers that go away mid-list.

    The SDK lists, then inspects each container; a container removed in between (a surge
    container retired by the release under test, another test's scratch server) makes the
    inspect answer 404. Listing again sees the new state.
    """
    for _ in range(10):
        try:
            return client.containers.list(all=all, filters={"label": labels})
        except docker.errors.NotFound:
            time.sleep(0.2)
    return client.containers.list(all=all, filters={"label": labels})


def project_containers(client: docker.DockerClient, project: str, service: str | None = None,
                       all: bool = True) -> list:
    """Containers of a compose project (and service)."""
    labels = ["com.docker.compose.project=%s" % project]
    if service:
        labels.append("com.docker.compose.service=%s" % service)
    return labelled_containers(client, labels, all=all)
