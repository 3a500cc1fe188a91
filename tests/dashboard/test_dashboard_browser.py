"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright): a cluster, its
overview, a job that appears and changes state without a reload, its live log, a worker, an actor, and the
link to a child job. One browser session for the module; screenshots go to the test's tmp dir
(``<tmp>/screenshots/*.png``, see tests/README.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from dash_helpers import DashCluster, serve_greeter, spawn_child_and_wait, talk_when_told

from fluster.actor.resolver import ClusterResolver
from fluster.types import Entrypoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI needs chromium for the dashboard's browser tests: apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium): no browser tests", allow_module_level=True)

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install -e .[dev])"
)


async def test_the_dashboard_follows_a_cluster_live(dash: DashCluster, tmp_path: Path) -> None:
    expect = playwright_api.expect
    shots = tmp_path / "screenshots"
    shots.mkdir()
    client = dash.client
    go, done = tmp_path / "go", tmp_path / "done"
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            # the overview: one worker, nothing running
            await page.goto(dash.url + "/")
            await expect(page.locator("#workers-count")).to_have_text("1")
            await expect(page.locator("#live")).to_have_attribute("data-live", "1")
            await page.screenshot(path=str(shots / "overview-idle.png"), full_page=True)

            # a job appears and starts running without a reload
            job_id = await client.submit("talker", Entrypoint.from_callable(talk_when_told, str(go), str(done)))
            await expect(page.locator("#job-states [data-state=RUNNING] b")).to_have_text("1")
            await page.screenshot(path=str(shots / "overview-running.png"), full_page=True)

            # the jobs page links to it; its page follows its log
            await page.click("nav >> text=Jobs")
            await expect(page.locator("table.jobs")).to_contain_text(job_id)
            await page.click(f"table.jobs a.job >> text={job_id}")
            await expect(page.locator("#job-id")).to_have_text(job_id)
            await expect(page.locator("#log")).to_contain_text("first line")
            go.write_text("")
            await expect(page.locator("#log")).to_contain_text("a new line arrived")
            await page.screenshot(path=str(shots / "job-log.png"), full_page=True)
            done.write_text("")
            await expect(page.locator("#content .state").first).to_have_text("SUCCEEDED")
            await expect(page.locator("#content pre.result")).to_have_text("'finished'")

            # a worker, with its capacity
            await page.click("nav >> text=Workers")
            await expect(page.locator("table.workers")).to_contain_text(dash.workers[0].worker_id)
            await page.click(f"table.workers a.worker >> text={dash.workers[0].worker_id}")
            await expect(page.locator("main h1")).to_contain_text(dash.workers[0].worker_id)
            await page.screenshot(path=str(shots / "worker.png"), full_page=True)

            # an actor appears on the actors page while its job serves it, with the calls it answered
            stop = tmp_path / "stop-actor"
            server_job = await client.submit("greeter-job", Entrypoint.from_callable(serve_greeter, str(stop)))
            await page.click("nav >> text=Actors")
            await expect(page.locator("table.actors")).to_contain_text("greeter")
            await expect(page.locator("table.actors")).to_contain_text(server_job)
            resolver = ClusterResolver(client)
            try:
                pool = await resolver.lookup("greeter")
                assert await pool.call().hello("browser") == "hello browser"
            finally:
                await resolver.close()
            await page.screenshot(path=str(shots / "actors.png"), full_page=True)
            stop.write_text("")

            # a parent's page links to its child
            kids_done = tmp_path / "kids-done"
            parent = await client.submit("parent", Entrypoint.from_callable(spawn_child_and_wait, str(kids_done)))
            await page.goto(f"{dash.url}/jobs/{parent}")
            child = f"{parent}/kid"
            await expect(page.locator("table.children")).to_contain_text(child)
            await page.click(f"table.children a.job >> text={child}")
            await expect(page.locator("#job-id")).to_have_text(child)
            await expect(page.locator("#content dl.facts")).to_contain_text(parent)
            await page.screenshot(path=str(shots / "child-job.png"), full_page=True)
            kids_done.write_text("")
            await client.wait(parent, timeout=60)
            await client.wait(server_job, timeout=60)
        finally:
            await browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "actors.png",
        "child-job.png",
        "job-log.png",
        "overview-idle.png",
        "overview-running.png",
        "worker.png",
    ]
