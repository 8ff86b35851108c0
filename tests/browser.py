"""What the Chromium tests share: Debian's Chromium, a live console at http://localhost,
and Chromium's virtual authenticator (CDP `WebAuthn`) as a passkey.

The console is served at `localhost`, never an IP address: WebAuthn needs a host name as
its relying party id. Each module builds its own server (its own home folder and data)
from these pieces, so one module's changes never reach another's.

The fixtures here are imported by the browser modules, which makes them theirs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import CDPSession, Page
from sqlalchemy.orm import Session, sessionmaker

from tutela.app import create_app
from tutela.db import migrate
from tutela.db.engine import make_engine
from tutela.identity import breached
from tutela.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium; without it the browser tests skip, or fail when
    TUTELA_REQUIRE_BROWSER=1."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: `apt-get install -y chromium` (RECIPES.md)"
        if os.environ.get("TUTELA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": [
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
        ],
    }


@pytest.fixture
def browser_context_args(base_url: str) -> dict[str, Any]:
    """This module's server. pytest-playwright computes its own once a session, with the
    first module's server; asking for it here would fix it to ours for the other modules."""
    return {"base_url": base_url}


@pytest.fixture(autouse=True)
def _quick_failures(page: Page) -> None:
    # Every page here answers in milliseconds; a 30 s wait would only hide a failure.
    page.set_default_timeout(5_000)


NARROW = {"width": 320, "height": 740}
"""A phone's narrow screen."""


def narrow_screen_without_script(**more: Any) -> Callable[[str], dict[str, Any]]:
    """A module's `browser_context_args` fixture: this module's server on a phone's narrow
    screen, with no script at all (the console needs none); `more` adds context options.
    Assign it as `browser_context_args = narrow_screen_without_script()`."""

    @pytest.fixture
    def browser_context_args(base_url: str) -> dict[str, Any]:
        return {"base_url": base_url, "viewport": NARROW, "java_script_enabled": False, **more}

    return browser_context_args


def no_sideways_scroll(page: Page) -> None:
    """The page fits the narrow screen: nothing scrolls sideways."""
    width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(  # what sticks out, named in the failure
        "[...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > 321)"
        ".map(e => e.tagName + '.' + e.className).slice(0, 8)"
    )
    assert width <= NARROW["width"], f"the page is {width} px wide: {wide}"


def app_sessions(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(make_engine(settings.main_url))


def loopback_listener() -> tuple[socket.socket, str]:
    """A socket on a free loopback port, and its origin `http://localhost:PORT`."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    return listener, f"http://localhost:{port}"


def console_settings(home: Path, origin: str, **overrides: Any) -> Settings:
    """Explicit stores in `home`, so a developer's TUTELA_DATABASE_URL or S3 settings are
    never touched."""
    return Settings(
        environment="test",
        home=home,
        database_url=None,
        keystore_url=None,
        master_key=None,
        master_key_file=None,
        blob_store="local",
        blob_dir=None,
        log_level="WARNING",
        public_url=origin,
        **overrides,
    )


def prepared_app(settings: Settings) -> FastAPI:
    """The app over freshly migrated stores, with the default breached-password list."""
    migrate.upgrade(settings.main_url, settings.keys_url)
    breached.seed_default(app_sessions(settings))
    return create_app(settings)


@contextmanager
def serving(app: FastAPI, listener: socket.socket) -> Iterator[None]:
    """`app` served on `listener` in a thread until the block ends."""
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("The console server did not start.", pytrace=False)
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def virtual_authenticator(page: Page, **options: Any) -> tuple[CDPSession, str]:
    """A virtual platform authenticator that keeps passkeys (discoverable credentials)
    and verifies its user; `options` adds to or changes CDP's authenticator options.
    Returns the CDP session and the authenticator's id."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                **options,
            }
        },
    )
    return cdp, made["authenticatorId"]
