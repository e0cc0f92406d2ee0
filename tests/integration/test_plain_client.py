"""Another system, using only nats-py and the documented contract (not this project's library),
registers a model by event and reads the result from the event stream."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from minio import Minio
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.auth.authority import Authority
from shared.settings import Settings
from tests.support import sample_files

pytestmark = pytest.mark.usefixtures("running_registry")


async def test_plain_nats_client_registers_by_event_and_reads_the_event_stream(
    settings: Settings, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path, seed=11)
    # The other system owns its bucket and object; it only tells the registry where it is.
    s3 = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=False,
        region="us-east-1",
    )
    if not s3.bucket_exists("other-team"):
        s3.make_bucket("other-team")
    s3.fput_object("other-team", "exports/model.onnx", str(model))

    name = f"plain-{uuid.uuid4().hex[:8]}"
    command = {
        "type": "model.register",
        "schema_version": 1,
        "id": uuid.uuid4().hex,
        "time": datetime.now(UTC).isoformat(),
        "source": "other-system",
        "data": {"name": name, "version": "0.1.0", "artifact": {"bucket": "other-team", "key": "exports/model.onnx"}},
    }
    # Another system has its own identity: operator credentials, and replies under its own inbox.
    creds = settings.auth_dir / "creds" / "other-system.creds"
    creds.write_text(Authority(settings.auth_dir).issue("operator", "other-system", rotate=True))
    nc = await nats.connect(settings.nats_url, user_credentials=str(creds), inbox_prefix="_INBOX.operator.other-system")
    js = nc.jetstream()
    events = await js.subscribe(
        "slmops.evt.model.registered",
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    ack = await js.publish(
        "slmops.cmd.model.register", json.dumps(command).encode(), headers={"Nats-Msg-Id": command["id"]}
    )
    assert ack.stream == "SLMOPS_CMDS"
    try:
        while True:
            msg = await events.next_msg(timeout=30)
            event = json.loads(msg.data)
            if event["data"]["record"]["name"] == name:
                break
    finally:
        await nc.close()
    record = event["data"]["record"]
    assert event["type"] == "model.registered" and event["source"] == "registry"
    assert record["version"] == "0.1.0" and record["command_id"] == command["id"]
    assert record["artifact"]["key"] == f"blobs/sha256/{record['artifact']['digest']}"
    assert record["onnx"]["inputs"][0]["name"] == "input_ids"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == event["id"]
