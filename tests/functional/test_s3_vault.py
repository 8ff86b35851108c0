"""The vault on an S3-compatible store (moto's server over real HTTP): upload, read, no plaintext."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import boto3
import pytest
from fastapi.testclient import TestClient

from tests.factories import make_home, wav_bytes
from tests.functional.conftest import owner_email, sign_in, upload_voice
from tutela.app import create_app
from tutela.container import build
from tutela.core.clock import FakeClock
from tutela.settings import Settings


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_media_goes_to_the_bucket_sealed_and_plays_back(
    settings: Settings, clock: FakeClock, s3_endpoint: str, unique: str
) -> None:
    s3_settings = Settings(
        **{
            **settings.model_dump(),
            "blob_store": "s3",
            "s3_endpoint_url": s3_endpoint,
            "s3_bucket": f"tutela-{unique}",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
    )
    container = build(s3_settings, clock=clock)
    try:
        home = make_home(container, tag=unique)
        audio = wav_bytes(1.0)
        with TestClient(create_app(container=container)) as client:
            item_id = upload_voice(client, container, home, body=audio)
            headers = sign_in(client, owner_email(home))
            got = client.get(
                f"/api/v1/items/{item_id}/content",
                headers={**headers, "range": "bytes=44-1043"},
            )
            assert got.status_code == 206 and got.content == audio[44:1044]
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        objects = s3.list_objects_v2(Bucket=f"tutela-{unique}")["Contents"]
        assert len(objects) == 1
        stored = s3.get_object(Bucket=f"tutela-{unique}", Key=objects[0]["Key"])["Body"].read()
        assert audio[44:2000] not in stored and not stored.startswith(b"RIFF")
        assert (container.settings.blob_path).exists() is False or not any(
            container.settings.blob_path.rglob("*")
        )
    finally:
        from tests.conftest import _empty
        from tutela.db.base import Base, KeyBase

        _empty(container.stores.main, Base.metadata)
        _empty(container.stores.keys, KeyBase.metadata)
        container.close()
