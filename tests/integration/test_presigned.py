"""Presigned download URLs are bearer tokens: each must open exactly one object, and only until it
expires. The embedded S3 server (SeaweedFS) checks both, so these are tested, not assumed."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta

import pytest

from shared.artifacts import ArtifactStore


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def two_objects(artifacts: ArtifactStore) -> tuple[str, str]:
    first, second = (f"tests/presigned/{uuid.uuid4().hex}/{n}" for n in ("a", "b"))
    artifacts.put_bytes(first, b"first object")
    artifacts.put_bytes(second, b"second object")
    return first, second


def test_a_presigned_url_opens_its_object_until_it_expires(
    artifacts: ArtifactStore, two_objects: tuple[str, str]
) -> None:
    first, _ = two_objects
    url = artifacts.presigned_get(first, ttl=timedelta(seconds=1))
    assert fetch(url) == 200
    time.sleep(2.5)  # not a timing assertion: the URL's own expiry is what is being checked
    assert fetch(url) == 403


def test_a_presigned_url_opens_no_other_object(artifacts: ArtifactStore, two_objects: tuple[str, str]) -> None:
    first, second = two_objects
    url = artifacts.presigned_get(first, ttl=timedelta(minutes=5))
    parts = urllib.parse.urlsplit(url)
    assert parts.path.endswith("/a")
    other = parts._replace(path=parts.path[:-1] + "b").geturl()  # the same signature, the other object
    assert other != url
    assert fetch(other) == 403
    assert fetch(url.replace("X-Amz-Expires=300", "X-Amz-Expires=604800")) == 403  # a longer life is a new signature
