"""The dashboard routes without a browser: the page, its assets, and no way out of them."""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from memwarden.http._dashboard import dashboard_routes


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Mount("/under/a/prefix", routes=dashboard_routes())])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_page_and_every_asset_it_names_are_served(client: httpx.AsyncClient) -> None:
    async with client:
        page = await client.get("/under/a/prefix/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        html = page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets
        for asset in assets:
            # Relative URLs only, so the page works under any prefix and from no other host.
            assert not asset.startswith(("/", "http:", "https:", "//")), asset
            answer = await client.get("/under/a/prefix/" + asset)
            assert answer.status_code == 200, asset
            assert answer.headers["x-content-type-options"] == "nosniff"
        script = (await client.get("/under/a/prefix/static/dashboard.js")).text
        assert script.startswith("//") or script.startswith('"use strict"')
        assert (await client.head("/under/a/prefix/static/dashboard.css")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "static/../_dashboard.py",
        "static/%2e%2e/_dashboard.py",
        "static/..%2f_dashboard.py",
        "static/%2e%2e%2f%2e%2e%2f__init__.py",
        "static/.hidden",
        "static/",
        "static/nothing.js",
        "static//etc/passwd",
        "static/%00.js",
        "static/..%5c_dashboard.py",
    ],
)
async def test_assets_never_leave_the_static_folder(client: httpx.AsyncClient, path: str) -> None:
    async with client:
        answer = await client.get("/under/a/prefix/" + path)
    assert answer.status_code == 404
    assert "import" not in answer.text


def test_the_script_uses_no_url_but_relative_ones() -> None:
    static = resources.files("memwarden.http").joinpath("static")
    script = static.joinpath("dashboard.js").read_text()
    assert "EventSource" not in script.replace("EventSource cannot", "")
    for url in re.findall(r'fetch\(\s*"([^"]*)"', script):
        assert not url.startswith(("/", "http")), url
    # The token only ever travels in a header.
    assert "Authorization" in script
    assert not re.search(r"[?&]token=", script)
